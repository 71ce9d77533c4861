/**
 * Checks real answers of the server against its own OpenAPI document (GET /api/openapi.json):
 * the harness's Api client runs every JSON answer through `check`, so every integration test that
 * uses it also tests the document. A mismatch throws (the test fails with the operation, status,
 * schema errors and the body).
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';

type Json = Record<string, any>;

interface Op {
  method: string;
  template: string;
  regex: RegExp;
  params: number;
  op: Json;
}

const escapePointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

export class ApiContract {
  private readonly ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
  private readonly ops: Op[] = [];
  private readonly compiled = new Map<string, ValidateFunction>();

  constructor(readonly doc: Json) {
    this.ajv.addSchema(doc, 'openapi');
    for (const [template, item] of Object.entries(doc['paths'] as Record<string, Json>)) {
      const names = [...template.matchAll(/\{[^}]+\}/g)].length;
      const regex = new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{[^}]+\\?\}/g, '[^/]+')}$`);
      for (const [method, op] of Object.entries(item)) this.ops.push({ method: method.toUpperCase(), template, regex, params: names, op: op as Json });
    }
    // A literal segment wins over a parameter (/agents/summary before /agents/{id}).
    this.ops.sort((a, b) => a.params - b.params);
  }

  /** The documented operation of a request, or null. */
  find(method: string, urlPath: string): Op | null {
    const p = urlPath.split('?')[0]!;
    return this.ops.find((o) => o.method === method.toUpperCase() && o.regex.test(p)) ?? null;
  }

  private validator(pointer: string): ValidateFunction {
    let v = this.compiled.get(pointer);
    if (!v) {
      v = this.ajv.compile({ $ref: `openapi#${pointer}` });
      this.compiled.set(pointer, v);
    }
    return v;
  }

  /** Problems with one answer (empty when it matches the document). */
  problems(method: string, urlPath: string, status: number, contentType: string | null, text: string): string[] {
    const p = urlPath.split('?')[0]!;
    if (!p.startsWith('/api/') && p !== '/api') return [];
    const o = this.find(method, p);
    const isJson = /^application\/json\b/.test(contentType ?? '');
    let pointer: string;
    let label: string;
    if (!o) {
      // Unknown API paths answer the catch-all 404 with the error shape.
      if (status !== 404) return [`${method} ${p} is not in the OpenAPI document (answered ${status})`];
      pointer = '/components/schemas/Error';
      label = `${method} ${p} (undocumented path) ${status}`;
    } else {
      const responses = o.op['responses'] as Json;
      const key = String(status) in responses ? String(status) : 'default';
      const r = responses[key] as Json | undefined;
      label = `${method} ${o.template} ${status}`;
      if (!r) return [`${label}: status not documented`];
      const content = r['content'] as Json | undefined;
      if (!content) return text.length === 0 ? [] : [`${label}: documented without a body, got ${text.length} bytes`];
      if (!content['application/json']) {
        // A documented non-JSON body (a stream, a file): the media type must match.
        const media = Object.keys(content);
        const actual = (contentType ?? '').split(';')[0]!.trim();
        const ok = media.some((m) => m === actual) || (media.includes('text/plain') && actual === 'application/octet-stream');
        return ok ? [] : [`${label}: content type ${actual || 'none'}, documented ${media.join(', ')}`];
      }
      if (!isJson) return [`${label}: documented as JSON, got ${contentType ?? 'no content type'}`];
      pointer = `/paths/${escapePointer(o.template)}/${o.method.toLowerCase()}/responses/${key}/content/application~1json/schema`;
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return [`${label}: not JSON: ${text.slice(0, 200)}`];
    }
    const v = this.validator(pointer);
    if (v(body)) return [];
    return [`${label}: ${this.ajv.errorsText(v.errors, { separator: '; ' })}\n  body: ${JSON.stringify(body).slice(0, 2000)}`];
  }
}

const contracts = new Map<string, Promise<ApiContract | null>>();

/** The document of the server at `base`, fetched once (null while it cannot be had). */
export function contractOf(base: string): Promise<ApiContract | null> {
  let c = contracts.get(base);
  if (!c) {
    c = fetch(`${base}/api/openapi.json`).then(
      async (r) => (r.ok ? new ApiContract((await r.json()) as Json) : null),
      () => null,
    );
    contracts.set(base, c);
    // Not cached when it failed (the server was starting or away): tried again next time.
    void c.then((x) => {
      if (!x) contracts.delete(base);
    });
  }
  return c;
}
