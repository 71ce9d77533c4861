/**
 * Issue 9: hostile input from signed-in users must be a 400 naming what is wrong, never a 500,
 * a crash or a frozen server (selector denial of service, repeated query parameters, odd bodies,
 * artifact names). A real agent heartbeats throughout, so a stalled event loop shows as it going
 * offline.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, databases, startAgent, startServer, type TestServer } from '../helpers/harness.js';
import { FAKE_SIG, fakePackage } from '../helpers/agent-packages.js';

const dbs = await databases();

describe.each(dbs)('input hardening (%s)', (db) => {
  let s: TestServer;
  let admin: Api;
  let viewer: Api;
  let agent: string;

  beforeAll(async () => {
    // Fast heartbeats: a server that stalls for a few seconds would mark the agent offline.
    s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: '500', MUSTER_PRESENCE_FLUSH_MS: '200' } });
    admin = await Api.login(s.url);
    viewer = await admin.userWithRole('viewer');
    const a = startAgent(s, { name: 'steady', labels: { role: 'web' } });
    agent = await agentId(a);
    await admin.waitAgent(agent, 'online');
  });
  afterAll(cleanup);

  const sel = (v: Api, selector: string) => v.get(`/api/agents?selector=${encodeURIComponent(selector)}`);

  it('a pathological glob from a viewer answers and does not stall heartbeats', async () => {
    const before = (await admin.get(`/api/agents/${agent}`)).body.lastSeenAt as string;
    // `*` × 40 then a character no id has: exponential for a backtracking RegExp.
    const evil = [`id ~ "${'*'.repeat(40)}!"`, `hostname ~ "${'*?'.repeat(60)}!"`, `labels.role ~ "${'*w'.repeat(100)}!"`];
    for (const e of evil) {
      const r = await sel(viewer, e);
      expect(r.status, e).toBe(200);
      expect(r.body.total).toBe(0);
    }
    // Still online, and heartbeats kept arriving (last seen moves on).
    const after = await admin.waitAgent(agent, 'online');
    expect(after.status).toBe('online');
    await admin.waitAgent(agent, 'online');
    const later = await (async () => {
      for (let i = 0; i < 100; i++) {
        const r = await admin.get(`/api/agents/${agent}`);
        if (r.body.lastSeenAt !== before) return r.body;
        await new Promise((res) => setTimeout(res, 100));
      }
      return null;
    })();
    expect(later?.status).toBe('online');
  });

  it('selector errors are 400 with the position: reversed range, deep nesting, too long, prototype keys match nothing', async () => {
    let r = await sel(viewer, 'hostname ~ "[z-a]"');
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('selector_syntax');
    expect(r.body.error.position).toBe(13);
    r = await sel(viewer, `${'('.repeat(5000)}all${')'.repeat(5000)}`);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('selector_syntax');
    expect(typeof r.body.error.position).toBe('number');
    expect(r.body.error.message).toMatch(/position/);
    for (const k of ['__proto__', 'constructor']) {
      r = await sel(viewer, `labels.${k} ~ "*"`);
      expect(r.status).toBe(200);
      expect(r.body.total).toBe(0);
    }
    // The same selector limits guard task targets.
    const op = await admin.userWithRole('operator');
    r = await op.post('/api/tasks', { script: 'true', targets: { selector: `${'('.repeat(5000)}all${')'.repeat(5000)}` } });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('selector_syntax');
    r = await op.post('/api/tasks', { script: 'true', targets: { selector: 'x'.repeat(17_000) } });
    expect(r.status).toBe(400);
    expect(r.body.error.position).toBe(16_384);
  });

  it('repeated query parameters are a 400 naming the parameter, on every router', async () => {
    const paths = [
      '/api/agents?status=online&status=offline',
      '/api/agents?selector=all&selector=all',
      '/api/agents?limit=1&limit=2',
      `/api/agents/${agent}/connections?offset=1&offset=2`,
      '/api/tasks?status=running&status=failed',
      '/api/tasks?createdBy=a&createdBy=b',
      '/api/executions?agentId=a&agentId=b',
      '/api/terminals?user=a&user=b',
      '/api/artifacts?limit=x',
      '/api/rollouts?offset=1&offset=2',
      '/api/audit?actor=a&actor=b',
      '/api/scripts?q=a&q=b',
      '/api/scripts?limit=1&limit=2',
    ];
    for (const p of paths) {
      const r = await admin.get(p);
      expect(r.status, p).toBe(400);
      expect(r.body.error.code, p).toBe('bad_request');
      expect(r.body.error.message, p).toMatch(/query parameter \w+/);
    }
    // Plain use still works, and an empty value means "not given".
    expect((await admin.get('/api/agents?status=online&selector=&limit=5')).status).toBe(200);
    expect((await admin.get('/api/agents?status=sideways')).status).toBe(400);
  });

  it('PATCH /api/users/:id with nothing to change is a 400, not a 500', async () => {
    const users = (await admin.get('/api/users')).body.items as Array<{ id: number; username: string }>;
    const u = users.find((x) => x.username !== 'admin')!;
    let r = await admin.patch(`/api/users/${u.id}`, {});
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('bad_request');
    r = await admin.patch('/api/users/not-a-number', { role: 'viewer' });
    expect(r.status).toBe(404);
  });

  it('artifact uploads: bad arch leaves nothing behind; odd filenames still download (RFC 6266 filename*)', async () => {
    const artifacts = path.join(s.dataDir, 'artifacts');
    const files = () => (fs.existsSync(artifacts) ? fs.readdirSync(artifacts) : []);
    const before = files();
    const up = (query: string, version: string) =>
      admin.req('POST', `/api/artifacts?version=${version}&signature=${encodeURIComponent(FAKE_SIG)}${query}`, fakePackage(version), {
        'content-type': 'application/octet-stream',
      });
    let r = await up('&arch=x64&arch=arm64', '3.0.0');
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/arch/);
    r = await up('&arch=X86%20BAD', '3.0.0');
    expect(r.status).toBe(400);
    expect(files()).toEqual(before);
    expect((await admin.get('/api/artifacts')).body.total).toBe(0);

    for (const [name, version] of [
      ['muster\r\nSet-Cookie: x=1.tar.gz', '3.0.1'],
      ['müster-代理-€.tar.gz', '3.0.2'],
    ] as const) {
      r = await up(`&filename=${encodeURIComponent(name)}`, version);
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      // `latest` is the newest stable package: this one, once marked.
      expect((await admin.post(`/api/artifacts/${r.body.id}/stable`)).status).toBe(200);
      for (const p of [`/api/artifacts/${r.body.id}/download`, '/api/artifacts/latest/download']) {
        const d = await admin.get(p);
        expect(d.status, p).toBe(200);
        const cd = d.headers.get('content-disposition')!;
        expect(cd).toMatch(/^attachment; filename="[^"\r\n]*"; filename\*=UTF-8''/);
        expect(decodeURIComponent(cd.split("filename*=UTF-8''")[1]!)).toBe(name.replace(/.*\//, ''));
        expect(d.headers.get('set-cookie')).toBeNull();
      }
    }
    // Only the two stored packages, no temp files.
    expect(files().filter((f) => !before.includes(f)).length).toBe(2);
    expect(files().some((f) => f.endsWith('.upload'))).toBe(false);
  });
});
