/**
 * Issue 9: hostile input from signed-in users must be a 400 naming what is wrong, never a 500,
 * a crash or a frozen server (selector denial of service, repeated query parameters, odd bodies,
 * artifact names). A real agent heartbeats throughout, so a stalled event loop shows as it going
 * offline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, databases, startAgent, startServer, type TestServer } from '../helpers/harness.js';

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
});
