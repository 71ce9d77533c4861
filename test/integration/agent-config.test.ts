/**
 * Live agent configuration: rules per agent or per selector, pushed to real agents, applied and
 * acknowledged; pending while an agent is offline and applied when it reconnects; bounds refused
 * with 400; the host policy wins; precedence per agent over selector, then priority. SQLite and MariaDB.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, databases, startAgent, startServer, tmpDir, waitFor, type TestAgent, type TestServer } from '../helpers/harness.js';

const dbs = await databases();

function writePolicy(policy: unknown): string {
  const file = path.join(tmpDir('policy'), 'policy.json');
  fs.writeFileSync(file, JSON.stringify(policy), { mode: 0o600 });
  return file;
}

async function healthPort(a: TestAgent): Promise<number> {
  const f = path.join(a.stateDir, 'health.port');
  return Number(await waitFor(() => fs.existsSync(f) && fs.readFileSync(f, 'utf8').trim(), 'health.port'));
}

describe.each(dbs)('live agent configuration (%s)', (db) => {
  afterAll(cleanup);
  let s: TestServer;
  let api: Api;

  /** Waits until the agent's config status is `applied` for the revision the server wants, and returns it. */
  const applied = (id: string, pred: (st: any) => boolean = () => true, what = 'applied configuration', ms = 30_000) =>
    waitFor(
      async () => {
        const r = await api.get(`/api/agents/${id}/config`);
        return r.status === 200 && r.body.state === 'applied' && r.body.applied?.revision === r.body.revision && pred(r.body) ? r.body : null;
      },
      `${id}: ${what}`,
      ms,
    );

  it('heartbeat interval and log level change live, acknowledged; bounds; roles; audit; precedence', async () => {
    s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: '1000', MUSTER_AGENT_HEARTBEAT_MAX_SEC: '60' } });
    api = await Api.login(s.url);
    const a = startAgent(s, { name: 'cfg-a', labels: { role: 'web' }, args: ['--health-port=0'] });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const port = await healthPort(a);
    // Nothing configured yet: the agent runs on its own settings, acknowledged as such.
    const first = await applied(id);
    expect(first.desired).toEqual({});
    expect(first.applied.effective).toMatchObject({ heartbeatIntervalSec: 1, logLevel: 'info' });

    // Out of bounds and wrong shapes: 400 naming the key; operators cannot edit.
    const bad = await api.post('/api/agent-config/rules', { agentId: id, settings: { heartbeatIntervalSec: 61 } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/heartbeatIntervalSec: must be at most 60/);
    expect((await api.post('/api/agent-config/rules', { agentId: id, settings: { heartbeatIntervalSec: 0 } })).status).toBe(400);
    expect((await api.post('/api/agent-config/rules', { agentId: id, settings: { logLevel: 'loud' } })).status).toBe(400);
    expect((await api.post('/api/agent-config/rules', { agentId: id, settings: { color: 'red' } })).status).toBe(400);
    expect((await api.post('/api/agent-config/rules', { settings: { logLevel: 'debug' } })).status).toBe(400);
    expect((await api.post('/api/agent-config/rules', { selector: 'labels.role ==', settings: {} })).status).toBe(400);
    const op = await api.userWithRole('operator');
    expect((await op.post('/api/agent-config/rules', { agentId: id, settings: { logLevel: 'debug' } })).status).toBe(403);
    expect((await op.get(`/api/agents/${id}/config`)).status).toBe(200);

    // A selector rule (priority 5) and a rule for the agent itself: the agent's own wins per key.
    const sel = await api.post('/api/agent-config/rules', {
      selector: 'labels.role == "web"',
      priority: 5,
      settings: { heartbeatIntervalSec: 3, logLevel: 'warn', labels: { tier: 'gold' } },
    });
    expect(sel.status).toBe(201);
    const own = await api.post('/api/agent-config/rules', { agentId: id, priority: -100, settings: { heartbeatIntervalSec: 4 } });
    expect(own.status).toBe(201);
    const st = await applied(id, (b) => b.applied.effective.heartbeatIntervalSec === 4, 'interval 4 s');
    expect(st.desired).toEqual({ heartbeatIntervalSec: 4, logLevel: 'warn', labels: { tier: 'gold' } });
    expect(st.rules).toEqual([sel.body.id, own.body.id]);
    expect(st.applied.effective.logLevel).toBe('warn');
    expect(st.applied.effective.labels).toEqual({ role: 'web', tier: 'gold' });
    // The agent really runs at the new interval, reports the pushed label, and logs at the new level.
    const h = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as any;
    expect(h.heartbeat.intervalMs).toBe(4000);
    expect(h.config.revision).toBe(st.revision);
    await waitFor(async () => (await api.get(`/api/agents/${id}`)).body.labels?.tier === 'gold', 'pushed label reported');
    // At warn, the info line for the next change is not written (and the ack still comes).
    const before = a.output().split('live configuration applied').length;
    const upd = await api.patch(`/api/agent-config/rules/${own.body.id}`, { settings: { heartbeatIntervalSec: 5 } });
    expect(upd.status).toBe(200);
    await applied(id, (b) => b.applied.effective.heartbeatIntervalSec === 5, 'interval 5 s');
    expect(a.output().split('live configuration applied').length).toBe(before);
    // Back to info: the line appears again.
    await api.patch(`/api/agent-config/rules/${sel.body.id}`, { settings: { heartbeatIntervalSec: 3, logLevel: 'info', labels: { tier: 'gold' } } });
    await applied(id, (b) => b.applied.effective.logLevel === 'info', 'log level info');
    await waitFor(() => a.output().split('live configuration applied').length > before, 'info line after the level went back');

    // Heartbeats every 5 s while the server's default is 1 s: the server allows three of the
    // agent's own intervals, so the agent stays online (the default would cut it after 3 s).
    const conns = (await api.get(`/api/agents/${id}/connections`)).body.items.length;
    await new Promise((r) => setTimeout(r, 12_000));
    expect((await api.get(`/api/agents/${id}`)).body.status).toBe('online');
    expect((await api.get(`/api/agents/${id}/connections`)).body.items.length).toBe(conns);

    // Deleting the rules takes the agent back to its own settings.
    expect((await api.delete(`/api/agent-config/rules/${own.body.id}`)).status).toBe(204);
    expect((await api.delete(`/api/agent-config/rules/${sel.body.id}`)).status).toBe(204);
    await applied(id, (b) => b.applied.effective.heartbeatIntervalSec === 1 && Object.keys(b.desired).length === 0, 'back to defaults');
    await waitFor(async () => (await api.get(`/api/agents/${id}`)).body.labels?.tier === undefined, 'pushed label gone');

    const audit = (await api.get('/api/audit?limit=200')).body.items as any[];
    const actions = audit.filter((x) => String(x.action).startsWith('agent_config.')).map((x) => x.action);
    expect(actions.filter((x) => x === 'agent_config.create')).toHaveLength(2);
    expect(actions.filter((x) => x === 'agent_config.update')).toHaveLength(2);
    expect(actions.filter((x) => x === 'agent_config.delete')).toHaveLength(2);
    await a.stop();
  }, 180_000);

  it('pending while offline, applied on reconnect; the host policy wins', async () => {
    const b = startAgent(s, { name: 'cfg-b', labels: { pool: 'p1' } });
    const idB = await agentId(b);
    await api.waitAgent(idB, 'online');
    await applied(idB);
    await b.stop();
    await api.waitAgent(idB, 'offline');
    const rule = await api.post('/api/agent-config/rules', { selector: 'labels.pool == "p1"', settings: { terminalIdleTimeoutSec: 3600, logLevel: 'debug' } });
    expect(rule.status).toBe(201);
    const pending = (await api.get(`/api/agents/${idB}/config`)).body;
    expect(pending).toMatchObject({ state: 'pending', online: false, desired: { terminalIdleTimeoutSec: 3600, logLevel: 'debug' } });
    expect((await api.get('/api/agent-config/agents?state=pending')).body.items.map((x: any) => x.agentId)).toContain(idB);
    // Back online (same state dir): the configuration is sent after the welcome and acknowledged.
    const b2 = startAgent(s, { name: 'cfg-b', labels: { pool: 'p1' }, stateDir: b.stateDir, token: null });
    const back = await applied(idB, (x) => x.applied.effective.terminalIdleTimeoutSec === 3600, 'applied after reconnect');
    expect(back.applied.effective.logLevel).toBe('debug');
    expect(back.applied.notes).toEqual({});

    // A policy that caps the idle timeout limits the pushed value; one that forbids remote
    // configuration refuses every key; both acknowledge with the reason.
    const capped = startAgent(s, { name: 'cfg-capped', labels: { pool: 'p1' }, args: ['--policy', writePolicy({ terminalIdleTimeoutMaxSec: 60 })] });
    const locked = startAgent(s, { name: 'cfg-locked', labels: { pool: 'p1' }, args: ['--policy', writePolicy({ remoteConfig: false, terminals: false })] });
    const [idC, idL] = await Promise.all([agentId(capped), agentId(locked)]);
    const c = await applied(idC, (x) => x.applied.effective.terminalIdleTimeoutSec === 60, 'capped by policy');
    expect(c.applied.notes.terminalIdleTimeoutSec).toMatch(/limited to 60 s by the host policy/);
    expect(c.applied.effective.logLevel).toBe('debug');
    const l = await applied(idL, (x) => Boolean(x.applied.notes.logLevel), 'refused by policy');
    expect(l.applied.effective).toMatchObject({ logLevel: 'info', terminalIdleTimeoutSec: 1800 });
    expect(l.applied.notes.terminalIdleTimeoutSec).toMatch(/remote configuration/);
    expect((await api.get(`/api/agents/${idL}`)).body.policy).toMatchObject({ remoteConfig: false, terminals: false });
    const list = (await api.get('/api/agent-config/agents?selector=labels.pool%20%3D%3D%20%22p1%22')).body;
    expect(list.total).toBe(3);
    expect(list.items.every((x: any) => x.state === 'applied')).toBe(true);
    await Promise.all([b2.stop(), capped.stop(), locked.stop()]);
    await s.stop();
  }, 180_000);
});
