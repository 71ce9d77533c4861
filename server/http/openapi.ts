import type { Router } from 'express';
import { z } from 'zod';
import { ErrorBody } from '../../protocol/index.js';
import { SESSION_COOKIE } from '../auth/auth-service.js';
import type { Media, Method, Operation, RegisteredRoute } from './api-router.js';

type Json = Record<string, unknown>;

const REASON: Record<number, string> = { 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content' };
const isMedia = (x: unknown): x is Media => typeof x === 'object' && x !== null && 'media' in x && !(x instanceof z.ZodType);

/** Express `/agents/:id` → OpenAPI `/api/agents/{id}`. */
export const openApiPath = (expressPath: string): string => `/api${expressPath.replace(/:([A-Za-z_][A-Za-z0-9_]*)/g, '{$1}')}`;
const pathParams = (expressPath: string): string[] => [...expressPath.matchAll(/:([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!);

/**
 * Converts zod schemas to JSON Schema 2020-12 (what OpenAPI 3.1 uses), hoisting every schema
 * with a `.meta({ id })` into components/schemas and pointing `$ref`s there.
 */
class SchemaSet {
  readonly components: Record<string, Json> = {};
  private readonly ids = new Map<string, string>();

  convert(schema: z.ZodType, io: 'input' | 'output'): Json {
    const out = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as Json;
    delete out['$schema'];
    const defs = (out['$defs'] ?? {}) as Record<string, Json>;
    delete out['$defs'];
    // Ids as written, except an input-side variant that differs from its output side: `<id>Input`.
    const rename = new Map<string, string>();
    for (const [id, def] of Object.entries(defs)) rename.set(id, this.place(id, def, io, defs));
    // A schema with an id comes back as a $ref to its own $defs entry: now to components.
    return this.rewrite(out, rename) as Json;
  }

  private place(id: string, def: Json, io: 'input' | 'output', defs: Record<string, Json>): string {
    const rename = new Map(Object.keys(defs).map((k) => [k, k]));
    const body = JSON.stringify(this.rewrite(def, rename));
    for (const name of io === 'output' ? [id, `${id}Output`] : [id, `${id}Input`]) {
      const have = this.ids.get(name);
      if (have === undefined) {
        this.ids.set(name, body);
        this.components[name] = JSON.parse(body) as Json;
        return name;
      }
      if (have === body) return name;
    }
    throw new Error(`two different schemas named ${id}`);
  }

  private rewrite(v: unknown, rename: Map<string, string>): unknown {
    if (Array.isArray(v)) return v.map((x) => this.rewrite(x, rename));
    if (v === null || typeof v !== 'object') return v;
    const o: Json = {};
    for (const [k, x] of Object.entries(v as Json)) {
      if (k === '$ref' && typeof x === 'string' && x.startsWith('#/$defs/')) {
        const id = x.slice('#/$defs/'.length);
        o[k] = `#/components/schemas/${rename.get(id) ?? id}`;
      } else o[k] = this.rewrite(x, rename);
    }
    return o;
  }
}

const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } });

function operationId(method: Method, path: string): string {
  const words = path
    .split('/')
    .filter(Boolean)
    .map((s) => s.replace(/^:/, 'by-'))
    .flatMap((s) => s.split(/[^A-Za-z0-9]+/))
    .filter(Boolean);
  return method + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

function operation(schemas: SchemaSet, method: Method, path: string, op: Operation): Json {
  const params: Json[] = pathParams(path).map((name) => ({
    name,
    in: 'path',
    required: true,
    schema: op.params?.[name] ? schemas.convert(op.params[name], 'input') : { type: 'string' },
  }));
  for (const [name, s] of Object.entries(op.query ?? {})) {
    const schema = s as z.ZodType;
    const p: Json = { name, in: 'query', required: !schema.safeParse(undefined).success, schema: schemas.convert(schema, 'input') };
    const description = (p['schema'] as Json)['description'];
    if (typeof description === 'string') p['description'] = description;
    params.push(p);
  }
  const roleText = op.role ? `Requires the \`${op.role}\` role (session or API token).` : op.auth ? '' : 'No sign-in needed.';
  const out: Json = {
    operationId: operationId(method, path),
    tags: [path.split('/')[1]!],
    summary: op.summary,
    description: [op.description, roleText, op.auth].filter(Boolean).join('\n\n'),
    'x-muster-role': op.role ?? 'none',
    security: op.role ? [{ sessionCookie: [] }, { bearerToken: [] }] : op.auth ? [{ sessionCookie: [] }, { bearerToken: [] }, { enrollmentToken: [] }] : [],
  };
  if (params.length) out['parameters'] = params;
  if (op.body) {
    out['requestBody'] = isMedia(op.body)
      ? { required: true, description: op.body.description, content: { [op.body.media]: { schema: { type: 'string', contentMediaType: op.body.media } } } }
      : { required: true, content: { 'application/json': { schema: schemas.convert(op.body as z.ZodType, 'input') } } };
  }
  const responses: Json = {};
  for (const [status, r] of Object.entries(op.responses)) {
    const description = REASON[Number(status)] ?? 'Success';
    if (r === null) responses[status] = { description };
    else if (isMedia(r)) responses[status] = { description: r.description, content: { [r.media]: { schema: { type: 'string' } } } };
    else responses[status] = { description, content: { 'application/json': { schema: schemas.convert(r as z.ZodType, 'output') } } };
  }
  if (op.body || op.query || params.length) responses['400'] ??= errorResponse('Invalid parameters or body (`bad_request`, or a more precise code)');
  if (op.role || op.auth) responses['401'] ??= errorResponse('Not signed in (`unauthorized`)');
  if ((op.role && op.role !== 'viewer') || method !== 'get')
    responses['403'] ??= errorResponse('The role is too low (`forbidden`), or a cross-site request (`cross_site`)');
  if (pathParams(path).length) responses['404'] ??= errorResponse('No such resource (`not_found`)');
  responses['default'] = errorResponse('Any other error (`{ "error": { "code", "message" } }`; 503/507 carry Retry-After)');
  out['responses'] = responses;
  return out;
}

/** The OpenAPI 3.1 document of every registered route. Two routes of one method and path (a `when` split) share one operation. */
export function openApiDocument(routes: readonly RegisteredRoute[], version: string): Json {
  const schemas = new SchemaSet();
  schemas.convert(ErrorBody, 'output');
  const paths: Record<string, Record<string, Json>> = {};
  const merged = new Map<string, RegisteredRoute[]>();
  for (const r of routes) {
    const k = `${r.method} ${r.path}`;
    merged.set(k, [...(merged.get(k) ?? []), r]);
  }
  for (const group of merged.values()) {
    const { method, path } = group[0]!;
    const docs = group.map((r) => operation(schemas, method, path, r.op));
    const first = docs[0]!;
    if (docs.length > 1) {
      // Alternatives of one path: the bodies as oneOf, the summaries and descriptions together.
      first['summary'] = group.map((r) => r.op.summary).join(', or ');
      first['description'] = docs.map((d) => d['description']).join('\n\n');
      const bodies = docs
        .map((d) => ((d['requestBody'] as Json | undefined)?.['content'] as Record<string, Json> | undefined)?.['application/json']?.['schema'])
        .filter(Boolean);
      if (bodies.length > 1) first['requestBody'] = { required: true, content: { 'application/json': { schema: { oneOf: bodies } } } };
      for (const d of docs.slice(1)) first['responses'] = { ...(d['responses'] as Json), ...(first['responses'] as Json) };
    }
    (paths[openApiPath(path)] ??= {})[method] = first;
  }
  const tags = [...new Set(routes.map((r) => r.path.split('/')[1]!))].sort().map((name) => ({ name }));
  return {
    openapi: '3.1.0',
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    info: {
      title: 'Muster API',
      version,
      description:
        'REST API of the Muster fleet manager, generated from the schemas the server validates with. ' +
        'Lists take `limit` and `offset` and answer `{ items, total }`; errors are `{ "error": { "code", "message" } }`. ' +
        'Sign in with POST /api/auth/login (session cookie) or send an API token (POST /api/tokens) as `Authorization: Bearer`. ' +
        'State-changing requests with the session cookie must send `Content-Type: application/json`.',
    },
    servers: [{ url: '/' }],
    tags,
    paths,
    components: {
      schemas: schemas.components,
      securitySchemes: {
        sessionCookie: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE, description: 'session from POST /api/auth/login' },
        bearerToken: { type: 'http', scheme: 'bearer', description: "API token from POST /api/tokens (rights: its scope, at most its owner's role)" },
        enrollmentToken: {
          type: 'apiKey',
          in: 'header',
          name: 'X-Muster-Enroll-Token',
          description: 'an agent enrollment token (package downloads by the installer)',
        },
      },
    },
  };
}

/** Every route of an Express router and the routers mounted on it at `/`: what is really served. */
export function walkRoutes(router: Router, prefix = ''): { method: string; path: string }[] {
  type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: Layer[] }; slash?: boolean };
  const out: { method: string; path: string }[] = [];
  for (const layer of (router as unknown as { stack: Layer[] }).stack) {
    if (layer.route) {
      for (const [m, on] of Object.entries(layer.route.methods)) if (on && m !== '_all') out.push({ method: m, path: prefix + layer.route.path });
    } else if (layer.handle?.stack) {
      if (!layer.slash) throw new Error('walkRoutes: a router mounted below a path is not supported (mount routers at /)');
      out.push(...walkRoutes(layer.handle as unknown as Router, prefix));
    }
  }
  return out;
}
