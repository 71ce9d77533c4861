/**
 * Live sockets act with current rights (issue 9, defect 1) and API tokens with expiry, scope and
 * a per-user cap (defect 8). A console socket (cookie or token) that controls a real terminal on a
 * real agent is closed with `sessionEnded` (4008), and its shell ends, when its session, token or
 * user ends: logout, TTL expiry, token revocation or expiry, demotion, disabling, password reset.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, consoleSocket, databases, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { TermClient } from '../helpers/terminal-client.js';

const SESSION_ENDED = 4008;
const dbs = await databases();
afterAll(cleanup);

/** Opens a console socket for `api`, a terminal on `agent`, runs `trigger`, and checks both end. */
async function endsWith(s: TestServer, admin: Api, api: Api, agent: string, trigger: () => Promise<unknown>, reason?: RegExp): Promise<void> {
  const client = await TermClient.connect(s, api, api.bearer ? null : s.url);
  const closed = new Promise<{ code: number; reason: string }>((r) => client.ws.once('close', (code, why) => r({ code, reason: why.toString() })));
  const t = await client.open(agent, 80, 24);
  await t.run('true');
  await trigger();
  const c = await closed;
  expect(c.code).toBe(SESSION_ENDED);
  if (reason) expect(c.reason).toMatch(reason);
  const row = await waitFor(
    async () => {
      const r = await admin.get(`/api/terminals/${t.sessionId}`);
      return r.body.status === 'closed' ? r.body : null;
    },
    'the terminal to end',
    30_000,
  );
  expect(row.closeReason).toBe('session ended');
}

describe('live sockets lose their rights with their credentials', () => {
  let s: TestServer;
  let admin: Api;
  let agent: string;
  beforeAll(async () => {
    s = await startServer({ env: { MUSTER_MAX_TOKENS_PER_USER: '3' } });
    admin = await Api.login(s.url);
    const a = startAgent(s, { name: 'live-rights' });
    agent = await agentId(a);
    await admin.waitAgent(agent, 'online');
  });
  const userId = async (api: Api) => (await api.get('/api/auth/me')).body.user.id as number;

  it('logout', async () => {
    const op = await admin.userWithRole('operator');
    await endsWith(s, admin, op, agent, () => op.post('/api/auth/logout'), /signed out/);
  });

  it('demotion below operator', async () => {
    const op = await admin.userWithRole('operator');
    const id = await userId(op);
    await endsWith(s, admin, op, agent, () => admin.patch(`/api/users/${id}`, { role: 'viewer' }));
  });

  it('disabling the user', async () => {
    const op = await admin.userWithRole('operator');
    const id = await userId(op);
    await endsWith(s, admin, op, agent, () => admin.patch(`/api/users/${id}`, { disabled: true }));
  });

  it('a password reset', async () => {
    const op = await admin.userWithRole('operator');
    const id = await userId(op);
    await endsWith(s, admin, op, agent, () => admin.patch(`/api/users/${id}`, { password: 'a-new-password-1' }));
  });

  it('a detached shell kept for reattach ends when its owner is disabled', async () => {
    const op = await admin.userWithRole('operator');
    const id = await userId(op);
    const client = await TermClient.connect(s, op);
    const t = await client.open(agent, 80, 24);
    await t.run('true');
    client.close(); // the browser went away: the shell lives on for the detach timeout
    await waitFor(async () => (await admin.get(`/api/terminals/${t.sessionId}`)).body.attached === false, 'the session to be detached');
    expect((await admin.patch(`/api/users/${id}`, { disabled: true })).status).toBe(200);
    const row = await waitFor(
      async () => {
        const r = await admin.get(`/api/terminals/${t.sessionId}`);
        return r.body.status === 'closed' ? r.body : null;
      },
      'the detached terminal to end',
      30_000,
    );
    expect(row.closeReason).toBe('session ended');
  });

  it('token revocation (a CLI-style bearer socket)', async () => {
    const op = await admin.userWithRole('operator');
    const tok = await op.post('/api/tokens', { name: 'cli' });
    const cli = new Api(s.url);
    cli.bearer = tok.body.token;
    await endsWith(s, admin, cli, agent, () => op.delete(`/api/tokens/${tok.body.id}`), /token revoked/);
    expect((await cli.get('/api/auth/me')).status).toBe(401);
  });

  it('token expiry closes its socket and the token is refused afterwards', async () => {
    const op = await admin.userWithRole('operator');
    const tok = await op.post('/api/tokens', { name: 'short', expiresInSec: 10 });
    expect(tok.status).toBe(201);
    expect(Date.parse(tok.body.expiresAt)).toBeGreaterThan(Date.now());
    const cli = new Api(s.url);
    cli.bearer = tok.body.token;
    await endsWith(s, admin, cli, agent, async () => {}, /expired/);
    expect((await cli.get('/api/auth/me')).status).toBe(401);
    const list = await op.get('/api/tokens');
    expect(list.body.items.find((x: any) => x.id === tok.body.id)).toMatchObject({ expired: true, revoked: false });
  });

  it('a demoted operator cannot open a terminal on a socket opened before the demotion', async () => {
    const op = await admin.userWithRole('operator');
    const id = await userId(op);
    const sock = await consoleSocket(s, op);
    await sock.next((m) => m.type === 'ready');
    const closed = new Promise<number>((r) => sock.ws.once('close', (code) => r(code)));
    expect((await admin.patch(`/api/users/${id}`, { role: 'viewer' })).status).toBe(200);
    if (sock.ws.readyState === sock.ws.OPEN) sock.ws.send(JSON.stringify({ type: 'term.open', ref: 'late', agentId: agent, cols: 80, rows: 24 }));
    expect(await closed).toBe(SESSION_ENDED);
    expect(sock.messages.some((m) => m.type === 'term.opened')).toBe(false);
    const mine = await admin.get(
      `/api/terminals?user=${encodeURIComponent((await admin.get('/api/users')).body.items.find((u: any) => u.id === id).username)}`,
    );
    expect(mine.body.total).toBe(0);
    // The REST side is current too: the viewer cannot run a task.
    const task = await op.post('/api/tasks', { script: 'true', targets: { agentIds: [agent] } });
    expect(task.status).toBe(403);
  });

  it("token scope: never above the owner; effective rights are the lower of scope and the owner's role", async () => {
    const op = await admin.userWithRole('operator');
    expect((await op.post('/api/tokens', { name: 'too-wide', scope: 'admin' })).status).toBe(403);
    const ro = await op.post('/api/tokens', { name: 'read-only', scope: 'viewer' });
    expect(ro.status).toBe(201);
    expect(ro.body.scope).toBe('viewer');
    const cli = new Api(s.url);
    cli.bearer = ro.body.token;
    expect((await cli.get('/api/auth/me')).body.user.role).toBe('viewer');
    expect((await cli.post('/api/tasks', { script: 'true', targets: { agentIds: [agent] } })).status).toBe(403);
    const sock = await consoleSocket(s, cli, null);
    sock.ws.send(JSON.stringify({ type: 'term.open', ref: 'scoped', agentId: agent, cols: 80, rows: 24 }));
    const answer = await sock.next((m) => m.ref === 'scoped');
    expect(answer).toMatchObject({ type: 'error', code: 'forbidden' });
    sock.close();
    // An operator-scoped token of a user demoted to viewer acts as a viewer.
    const wide = await op.post('/api/tokens', { name: 'op-scope', scope: 'operator' });
    await admin.patch(`/api/users/${(await op.get('/api/auth/me')).body.user.id}`, { role: 'viewer' });
    const cli2 = new Api(s.url);
    cli2.bearer = wide.body.token;
    expect((await cli2.get('/api/auth/me')).body.user.role).toBe('viewer');
  });

  it('a per-user token cap (MUSTER_MAX_TOKENS_PER_USER): 409 limit_exceeded; revoking frees a slot', async () => {
    const viewer = await admin.userWithRole('viewer');
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await viewer.post('/api/tokens', { name: `t${i}` });
      expect(r.status).toBe(201);
      ids.push(r.body.id);
    }
    const over = await viewer.post('/api/tokens', { name: 'one-too-many' });
    expect(over.status).toBe(409);
    expect(over.body.error.code).toBe('limit_exceeded');
    expect((await viewer.delete(`/api/tokens/${ids[0]}`)).status).toBe(204);
    // Concurrent creations cannot overshoot the cap: one slot is free, so exactly one gets it.
    const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => viewer.post('/api/tokens', { name: `burst${i}` })));
    expect(burst.filter((r) => r.status === 201)).toHaveLength(1);
    expect(burst.filter((r) => r.status === 409)).toHaveLength(7);
    const live = (await viewer.get('/api/tokens')).body.items.filter((t: any) => !t.revoked);
    expect(live).toHaveLength(3);
    await viewer.delete(`/api/tokens/${live[0].id}`);
    expect((await viewer.post('/api/tokens', { name: 'again' })).status).toBe(201);
    expect((await viewer.post('/api/tokens', { name: 'bad', expiresInSec: 10, expiresAt: new Date().toISOString() })).status).toBe(400);
    expect((await viewer.post('/api/tokens', { name: 'past', expiresAt: '2001-01-01T00:00:00Z' })).status).toBe(400);
  });
});

describe('session TTL', () => {
  it('a session that expires closes its socket (sessionEnded) and the terminal it controls', async () => {
    const s = await startServer({ env: { MUSTER_SESSION_TTL_SEC: '12' } });
    const login = await Api.login(s.url);
    // Checked through an admin token: the admin's session expires too.
    const admin = new Api(s.url);
    admin.bearer = (await login.post('/api/tokens', { name: 'checker' })).body.token;
    const a = startAgent(s, { name: 'ttl' });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const op = await admin.userWithRole('operator');
    await endsWith(s, admin, op, id, async () => {}, /expired/);
    expect((await op.get('/api/auth/me')).status).toBe(401);
  }, 60_000);
});

describe.each(dbs)('token expiry and scope are stored (%s)', (db) => {
  it('round-trips scope and expiry through the database', async () => {
    const s = await startServer({ db });
    const admin = await Api.login(s.url);
    const at = new Date(Date.now() + 3600_000).toISOString();
    const r = await admin.post('/api/tokens', { name: 'stored', scope: 'operator', expiresAt: at });
    expect(r.status).toBe(201);
    const item = (await admin.get('/api/tokens')).body.items.find((x: any) => x.id === r.body.id);
    expect(item).toMatchObject({ scope: 'operator', expiresAt: at, expired: false, revoked: false });
    const cli = new Api(s.url);
    cli.bearer = r.body.token;
    expect((await cli.get('/api/auth/me')).body.user.role).toBe('operator');
    await s.stop();
    await s.drop();
  });
});
