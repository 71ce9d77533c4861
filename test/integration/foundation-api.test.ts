/**
 * Foundation: login, roles, API tokens, audit, console socket gate, agent management routes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, consoleSocket, databases, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { upgradeStatus } from '../helpers/raw-agent.js';

const dbs = await databases();

describe.each(dbs)('foundation api (%s)', (db) => {
  let s: TestServer;
  let admin: Api;
  beforeAll(async () => {
    s = await startServer({ db });
    admin = await Api.login(s.url);
  });
  afterAll(cleanup);

  it('login sets an HttpOnly SameSite cookie; failed logins are refused; both are audited', async () => {
    const anon = new Api(s.url);
    const bad = await anon.post('/api/auth/login', { username: 'admin', password: 'wrong-password' });
    expect(bad.status).toBe(401);
    expect(bad.body.error.code).toBe('unauthorized');
    const ok = await anon.req('POST', '/api/auth/login', { username: 'admin', password: 'admin-password-123' });
    expect(ok.status).toBe(200);
    const cookie = ok.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    expect((await anon.get('/api/auth/me')).body.user).toMatchObject({ username: 'admin', role: 'admin' });
    expect((await new Api(s.url).get('/api/auth/me')).status).toBe(401);
    const audit = (await admin.get('/api/audit?action=auth.login&limit=100')).body.items;
    expect(audit.some((r: any) => r.actor === 'admin' && r.ok === false && r.details?.reason === 'bad credentials')).toBe(true);
    expect(audit.some((r: any) => r.actor === 'admin' && r.ok === true)).toBe(true);
    // Logout ends the session.
    expect((await anon.post('/api/auth/logout')).status).toBe(204);
    expect((await anon.get('/api/auth/me')).status).toBe(401);
  });

  it('an API token works as Bearer, is audited at creation, and stops working when revoked', async () => {
    const t = await admin.post('/api/tokens', { name: 'ci' });
    expect(t.status).toBe(201);
    expect(t.body.token).toMatch(/^mst_/);
    const bearer = new Api(s.url);
    bearer.bearer = t.body.token;
    const me = await bearer.get('/api/auth/me');
    expect(me.body).toMatchObject({ user: { username: 'admin' }, via: 'token' });
    expect((await bearer.get('/api/agents')).status).toBe(200);
    const audit = (await admin.get('/api/audit?action=token.create')).body.items;
    expect(audit.some((r: any) => r.targetId === String(t.body.id) && r.details?.name === 'ci')).toBe(true);
    // The token is shown once: listing has only its prefix.
    const list = (await admin.get('/api/tokens')).body.items;
    expect(JSON.stringify(list)).not.toContain(t.body.token);
    expect((await admin.delete(`/api/tokens/${t.body.id}`)).status).toBe(204);
    expect((await bearer.get('/api/agents')).status).toBe(401);
    const wrong = new Api(s.url);
    wrong.bearer = 'mst_not-a-token';
    expect((await wrong.get('/api/agents')).status).toBe(401);
  });

  it('roles: a viewer cannot patch, revoke or restart (403); operator and admin can', async () => {
    const a = startAgent(s, { name: 'roles-1', labels: { role: 'db' } });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const viewer = await admin.userWithRole('viewer');
    const operator = await admin.userWithRole('operator');
    expect((await viewer.get(`/api/agents/${id}`)).status).toBe(200);
    for (const [what, r] of [
      ['patch', await viewer.patch(`/api/agents/${id}`, { labels: { role: 'x' } })],
      ['revoke', await viewer.delete(`/api/agents/${id}`)],
      ['restart', await viewer.post(`/api/agents/${id}/restart`)],
      ['audit', await viewer.get('/api/audit')],
      ['token list of all', await viewer.post('/api/users', { username: 'x', password: 'password-123', role: 'admin' })],
    ] as const) {
      expect(r.status, what).toBe(403);
      expect(r.body.error.code, what).toBe('forbidden');
    }
    // Operator: patch yes, revoke no (admin only).
    const p = await operator.patch(`/api/agents/${id}`, { labels: { role: 'cache' }, groups: ['canary'] });
    expect(p.status).toBe(200);
    expect(p.body).toMatchObject({ labels: { role: 'cache' }, groups: ['canary'] });
    expect((await operator.delete(`/api/agents/${id}`)).status).toBe(403);
    // Invalid patch bodies are 400 with a code.
    const badPatch = await operator.patch(`/api/agents/${id}`, { labels: { 'bad key!': 'x' } });
    expect(badPatch.status).toBe(400);
    expect(badPatch.body.error.code).toBe('bad_request');
    expect((await operator.patch(`/api/agents/${id}`, { surprise: 1 })).status).toBe(400);
    expect((await admin.get(`/api/agents/${id}`)).body.labels).toEqual({ role: 'cache' });
    const audit = (await admin.get(`/api/audit?targetId=${id}`)).body.items;
    expect(audit.some((r: any) => r.action === 'agent.patch' && r.role === 'operator')).toBe(true);
    // Nothing the viewer tried left a trace in the data.
    expect(audit.filter((r: any) => r.role === 'viewer')).toHaveLength(0);
    await a.stop();
  });

  it('restart makes the agent exit 0 (its supervisor restarts it) and is audited', async () => {
    const a = startAgent(s, { name: 'restart-1' });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const operator = await admin.userWithRole('operator');
    const r = await operator.post(`/api/agents/${id}/restart`);
    expect(r.status).toBe(202);
    expect((await a.exited).code).toBe(0);
    await admin.waitAgent(id, 'offline');
    // A supervisor (systemd) would start it again: the same state dir comes back as the same agent.
    const again = startAgent(s, { name: 'restart-1', stateDir: a.stateDir });
    await admin.waitAgent(id, 'online');
    const audit = (await admin.get(`/api/audit?action=agent.restart&targetId=${id}`)).body.items;
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ ok: true, role: 'operator' });
    await again.stop();
    await admin.waitAgent(id, 'offline');
    const off = await admin.post(`/api/agents/${id}/restart`);
    expect(off.status).toBe(409);
    expect(off.body.error.code).toBe('agent_offline');
  });

  it('revoke is admin-only, audited, and the agent is refused afterwards', async () => {
    const a = startAgent(s, { name: 'revoke-2' });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    expect((await admin.delete(`/api/agents/${id}`)).status).toBe(204);
    await admin.waitAgent(id, 'offline');
    const audit = (await admin.get(`/api/audit?action=agent.revoke&targetId=${id}`)).body.items;
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: 'admin', ok: true });
    await waitFor(() => a.output().includes('server refused our credentials'), 'refusal');
    expect((await admin.get(`/api/agents/${id}`)).body.status).toBe('offline');
    await a.stop();
  });

  it('console socket: foreign Origin 403, no session 401, good session gets ready', async () => {
    const r403 = await upgradeStatus(s.wsUrl, { origin: 'https://evil.example', cookie: admin.cookie }, '/ws/console');
    expect(r403.status).toBe(403);
    expect(JSON.parse(r403.body).error.code).toBe('forbidden');
    const r401 = await upgradeStatus(s.wsUrl, { origin: s.url }, '/ws/console');
    expect(r401.status).toBe(401);
    const bogus = await upgradeStatus(s.wsUrl, { origin: s.url, cookie: 'muster_session=forged' }, '/ws/console');
    expect(bogus.status).toBe(401);
    expect((await upgradeStatus(s.wsUrl, {}, '/ws/nothing')).status).toBe(404);
    const c = await consoleSocket(s, admin);
    const ready = await c.next((m) => m.type === 'ready');
    expect(ready.user).toMatchObject({ username: 'admin', role: 'admin' });
    // Console messages go through the same gate: unknown types get an error, the socket stays.
    c.ws.send('{"type":"__proto__"}');
    expect((await c.next((m) => m.type === 'error')).code).toBe('unknown_type');
    c.ws.send('{"type":"ping","ref":"r1"}');
    expect(await c.next((m) => m.type === 'pong')).toEqual({ type: 'pong', ref: 'r1' });
    c.close();
  });

  it('REST errors are JSON with a code; unknown routes 404', async () => {
    const r = await admin.get('/api/no/such/thing');
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('not_found');
    expect((await admin.get('/api/agents?status=bogus')).status).toBe(400);
    const anon = new Api(s.url);
    expect((await anon.get('/api/agents')).status).toBe(401);
  });
});
