/**
 * Foundation: presence. Real server, real agent processes, SQLite and MariaDB. Heartbeats are
 * fast (500 ms) so that "three missed heartbeats" happens within a couple of seconds.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, consoleSocket, databases, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { helloAgent, scrape, waitCreds, withDb } from '../helpers/raw-agent.js';

const dbs = await databases();
const sleepMs = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const HB = 500;

/** The newest connection row of an agent once it is closed. */
async function lastClosed(api: Api, id: string): Promise<any> {
  return waitFor(async () => {
    const r = await api.get(`/api/agents/${id}/connections?limit=1`);
    const row = r.body.items?.[0];
    return row?.disconnectedAt ? row : null;
  }, `closed connection row of ${id}`);
}

describe.each(dbs)('foundation presence (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  beforeAll(async () => {
    // The stored last_seen_at of an online agent may lag by up to 3 s (MUSTER_PRESENCE_PERSIST_MS), far
    // more than the heartbeat interval: an offline agent's row must still be exact (see kill -9).
    s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: String(HB), MUSTER_PRESENCE_FLUSH_MS: '200', MUSTER_PRESENCE_PERSIST_MS: '3000' } });
    api = await Api.login(s.url);
  });
  afterAll(cleanup);

  it('registers an agent with its system facts and stores it', async () => {
    const a = startAgent(s, { name: 'facts-1', labels: { role: 'web', env: 'test' } });
    const id = await agentId(a);
    const v = await api.waitAgent(id, 'online');
    expect(v).toMatchObject({
      id,
      name: 'facts-1',
      hostname: os.hostname(),
      platform: process.platform,
      arch: process.arch,
      cpus: os.cpus().length,
      memoryBytes: os.totalmem(),
      version: '0.1.0',
      labels: { role: 'web', env: 'test' },
      status: 'online',
      revoked: false,
    });
    expect(v.os).toContain(os.release());
    expect(Array.isArray(v.ips) && v.ips.length).toBeTruthy();
    expect(Date.parse(v.connectedAt)).toBeGreaterThan(0);
    const row = await withDb(s.dbUrl, (k) => k('agents').where({ id }).first());
    expect(row).toMatchObject({ name: 'facts-1', hostname: os.hostname(), platform: process.platform });
    // The secret is stored only hashed; the agent keeps the plain one 0600.
    const { secret } = await waitCreds(a.stateDir);
    expect(row.secret_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(row.secret_hash).not.toContain(secret);
    expect(fs.statSync(path.join(a.stateDir, 'agent-secret')).mode & 0o777).toBe(0o600);
    // The summary counts it.
    const sum = await api.get('/api/agents/summary');
    expect(sum.body.byStatus.online).toBeGreaterThanOrEqual(1);
    const list = await api.get('/api/agents?status=online');
    expect(list.body.items.map((x: any) => x.id)).toContain(id);
    const off = await api.get('/api/agents?status=offline');
    expect(off.body.items.map((x: any) => x.id)).not.toContain(id);
    await a.stop();
  });

  it('updates metrics and last_seen_at from heartbeats (memory now, database in batches)', async () => {
    const a = startAgent(s, { name: 'metrics-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const first = await waitFor(
      async () => ((await api.get(`/api/agents/${id}`)).body.metrics ? (await api.get(`/api/agents/${id}`)).body : null),
      'first metrics',
    );
    expect(first.metrics).toMatchObject({ memTotalBytes: os.totalmem() });
    expect(first.metrics.cpuPercent).toBeGreaterThanOrEqual(0);
    expect(first.metrics.load).toHaveLength(3);
    expect(first.metrics.diskTotalBytes).toBeGreaterThan(0);
    const t0 = Date.parse(first.lastSeenAt);
    await waitFor(async () => Date.parse((await api.get(`/api/agents/${id}`)).body.lastSeenAt) > t0, 'lastSeenAt to advance');
    // Later heartbeats' metrics replace the first ones (the server updates its record's object in place).
    const later = await waitFor(async () => {
      const b = (await api.get(`/api/agents/${id}`)).body;
      return b.metrics.uptimeSec > first.metrics.uptimeSec ? b : null;
    }, 'metrics of a later heartbeat');
    expect(later.metrics.load).toHaveLength(3);
    expect(Object.keys(later.metrics).sort()).toEqual(Object.keys(first.metrics).sort());
    const dbSeen0 = Number((await withDb(s.dbUrl, (k) => k('agents').where({ id }).first('last_seen_at'))).last_seen_at);
    await waitFor(
      async () => Number((await withDb(s.dbUrl, (k) => k('agents').where({ id }).first('last_seen_at'))).last_seen_at) > dbSeen0,
      'last_seen_at flushed',
    );
    const m = await scrape(s.url);
    expect(m.get('muster_heartbeats_total')).toBeGreaterThan(1);
    expect(m.get('muster_db_presence_flushes_total')).toBeGreaterThan(0);
    expect(m.get('muster_db_presence_rows_total')).toBeGreaterThan(0);
    await a.stop();
  });

  it('pushes online, metrics and offline events to a console', async () => {
    const c = await consoleSocket(s, api);
    await c.next((m) => m.type === 'ready');
    const a = startAgent(s, { name: 'push-1' });
    const id = await agentId(a);
    const on = await c.next((m) => m.type === 'agent.online' && m.agent.id === id, 15_000, 'agent.online');
    expect(on.agent.name).toBe('push-1');
    await c.next((m) => m.type === 'agent.metrics' && m.items.some((i: any) => i.agentId === id), 15_000, 'agent.metrics');
    await a.stop('SIGKILL');
    const off = await c.next((m) => m.type === 'agent.offline' && m.agentId === id, 15_000, 'agent.offline');
    expect(off.reason).toBe('connection lost');
    c.close();
  });

  it('SIGSTOP: offline with `heartbeat timeout`; SIGCONT: back online', async () => {
    const a = startAgent(s, { name: 'frozen-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    a.proc.kill('SIGSTOP');
    try {
      await api.waitAgent(id, 'offline', 20_000);
      expect((await lastClosed(api, id)).reason).toBe('heartbeat timeout');
    } finally {
      a.proc.kill('SIGCONT');
    }
    await api.waitAgent(id, 'online', 20_000);
    const rows = (await api.get(`/api/agents/${id}/connections`)).body.items;
    expect(rows[0].disconnectedAt).toBeNull();
    expect(rows[1].reason).toBe('heartbeat timeout');
    await a.stop();
  });

  it('kill -9: `connection lost`', async () => {
    const a = startAgent(s, { name: 'killed-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    // Online for a few heartbeats, fewer than the persist interval: the row lags the memory until…
    await sleepMs(4 * HB);
    await a.stop('SIGKILL');
    const off = await api.waitAgent(id, 'offline');
    // …it goes offline: then the stored last_seen_at is its last heartbeat, as the API says.
    const stored = await waitFor(async () => {
      const r = await withDb(s.dbUrl, (k) => k('agents').where({ id }).first('last_seen_at'));
      return Number(r.last_seen_at) === Date.parse(off.lastSeenAt) ? Number(r.last_seen_at) : null;
    }, 'stored last_seen_at of the offline agent');
    expect(stored).toBe(Date.parse(off.lastSeenAt));
    const row = await lastClosed(api, id);
    expect(row.reason).toBe('connection lost');
    expect(row.durationMs).toBeGreaterThanOrEqual(0);
    expect(row.remoteAddress).toMatch(/127\.0\.0\.1/);
  });

  it('SIGTERM: says bye, `agent shutdown`, exit code 0', async () => {
    const a = startAgent(s, { name: 'term-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const code = await a.stop('SIGTERM');
    expect(code).toBe(0);
    await api.waitAgent(id, 'offline');
    expect((await lastClosed(api, id)).reason).toBe('agent shutdown');
  });

  it('a new secret is marked unconfirmed until a server welcomes the agent on it; the restarted agent keeps its enrollment', async () => {
    const a = startAgent(s, { name: 'confirm-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const { secret } = await waitCreds(a.stateDir);
    // Welcomed with a new secret: nobody has accepted it yet (the agent presents its token beside it).
    expect(fs.existsSync(path.join(a.stateDir, 'agent-secret-unconfirmed'))).toBe(true);
    expect(await a.stop('SIGTERM')).toBe(0);
    await api.waitAgent(id, 'offline');
    // The agent answered its welcome (its first heartbeat): the enrollment stood when it left.
    expect((await api.get(`/api/agents/${id}`)).status).toBe(200);
    const b = startAgent(s, { name: 'confirm-1', stateDir: a.stateDir });
    await api.waitAgent(id, 'online');
    // Welcomed on the stored secret: confirmed, the same secret, no second enrollment.
    await waitFor(() => !fs.existsSync(path.join(b.stateDir, 'agent-secret-unconfirmed')), 'the unconfirmed mark removed');
    expect((await waitCreds(b.stateDir)).secret).toBe(secret);
    const enrolls = (await api.get(`/api/audit?action=agent.enroll&targetId=${id}`)).body.items;
    expect(enrolls.map((r: any) => r.ok)).toEqual([true]);
    await b.stop();
  });

  it('a second connection with the same agent id replaces the first (`replaced`)', async () => {
    const a = startAgent(s, { name: 'dup-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const raw = await helloAgent(s.wsUrl, await waitCreds(a.stateDir));
    expect(raw.welcome.agentId).toBe(id);
    // The real agent's socket was the one replaced...
    await waitFor(async () => (await api.get(`/api/agents/${id}/connections`)).body.items.some((r: any) => r.reason === 'replaced'), 'replaced row');
    // ...and when it reconnects it replaces the raw one in turn (close code 4004).
    const closed = await raw.closed;
    expect(closed.code, JSON.stringify({ closed, messages: raw.messages })).toBe(4004);
    await api.waitAgent(id, 'online');
    // The newest row is the live one; every older row is closed (no row is left dangling).
    const rows = await waitFor(async () => {
      const items = (await api.get(`/api/agents/${id}/connections?limit=10`)).body.items;
      return items.filter((r: any) => r.disconnectedAt === null).length === 1 ? items : null;
    }, 'exactly one open connection row');
    expect(rows[0].disconnectedAt, JSON.stringify(rows)).toBeNull();
    expect(rows.filter((r: any) => r.reason === 'replaced').length, JSON.stringify(rows)).toBeGreaterThanOrEqual(2);
    await a.stop();
  });

  it('connection history paginates with a total', async () => {
    const a = startAgent(s, { name: 'hist-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    await a.stop();
    for (let i = 0; i < 3; i++) {
      const b = startAgent(s, { name: 'hist-1', stateDir: a.stateDir });
      await waitFor(async () => (await api.get(`/api/agents/${id}/connections?limit=1`)).body.total === i + 2, 'new connection row');
      await api.waitAgent(id, 'online');
      await b.stop();
    }
    await lastClosed(api, id);
    const all = (await api.get(`/api/agents/${id}/connections`)).body;
    expect(all.total).toBe(4);
    const p1 = (await api.get(`/api/agents/${id}/connections?limit=2&offset=0`)).body;
    const p2 = (await api.get(`/api/agents/${id}/connections?limit=2&offset=2`)).body;
    const p3 = (await api.get(`/api/agents/${id}/connections?limit=2&offset=4`)).body;
    expect(p1.total).toBe(4);
    expect(p1.items).toHaveLength(2);
    expect(p2.items).toHaveLength(2);
    expect(p3.items).toHaveLength(0);
    expect([...p1.items, ...p2.items].map((r: any) => r.id)).toEqual(all.items.map((r: any) => r.id));
    expect(all.items.every((r: any) => r.reason === 'agent shutdown')).toBe(true);
    expect((await api.get('/api/agents/nope/connections')).status).toBe(404);
  });

  it('SIGHUP re-reads the config file and sends the new labels', async () => {
    const dir = tmpDir('cfg');
    const cfgFile = path.join(dir, 'agent.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ labels: { tier: 'one' } }));
    const a = startAgent(s, { name: 'hup-1', args: ['--config', cfgFile] });
    const id = await agentId(a);
    expect((await api.waitAgent(id, 'online')).labels).toEqual({ tier: 'one' });
    fs.writeFileSync(cfgFile, JSON.stringify({ labels: { tier: 'two', zone: 'b' } }));
    a.proc.kill('SIGHUP');
    await waitFor(async () => (await api.get(`/api/agents/${id}`)).body.labels?.tier === 'two', 'labels after SIGHUP');
    expect((await api.get(`/api/agents/${id}`)).body.labels).toEqual({ tier: 'two', zone: 'b' });
    const row = await withDb(s.dbUrl, (k) => k('agents').where({ id }).first('labels'));
    expect(JSON.parse(row.labels)).toEqual({ tier: 'two', zone: 'b' });
    // A broken file keeps the old labels and the agent stays up.
    fs.writeFileSync(cfgFile, '{ not json');
    a.proc.kill('SIGHUP');
    await waitFor(() => a.output().includes('config reload failed'), 'reload failure logged');
    expect(a.proc.exitCode).toBeNull();
    expect((await api.get(`/api/agents/${id}`)).body).toMatchObject({ status: 'online', labels: { tier: 'two', zone: 'b' } });
    await a.stop();
  });

  it('/healthz, /readyz and /metrics answer (agents, heartbeats, disconnects by reason)', async () => {
    const h = await fetch(`${s.url}/healthz`);
    expect(h.status).toBe(200);
    const r = await fetch(`${s.url}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ ok: true, db: 'up' });
    const res = await fetch(`${s.url}/metrics`);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const m = await scrape(s.url);
    expect(m.has('muster_agents{status="online"}')).toBe(true);
    expect(m.get('muster_agents{status="offline"}')).toBeGreaterThanOrEqual(5);
    expect(m.get('muster_heartbeats_total')).toBeGreaterThan(0);
    for (const reason of ['heartbeat timeout', 'connection lost', 'agent shutdown', 'replaced']) {
      expect(m.get(`muster_agent_disconnects_total{reason="${reason}"}`), reason).toBeGreaterThanOrEqual(1);
    }
    expect(m.get('muster_agent_connects_total')).toBeGreaterThan(5);
    expect(m.get('muster_socket_messages_total{channel="agent",type="heartbeat"}')).toBeGreaterThan(0);
  });
});
