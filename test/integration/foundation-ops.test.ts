/**
 * Foundation: server restarts and crashes, connection storms, agent health endpoint, migrations,
 * and configuration errors. Real processes, SQLite and MariaDB.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { afterAll, describe, expect, it } from 'vitest';
import { migrationSource } from '../../migrations/index.js';
import { AGENT_JS, Api, SERVER_JS, agentId, cleanup, createMysqlDatabase, databases, startAgent, startServer, tmpDir, waitFor } from '../helpers/harness.js';
import { scrape, upgradeStatus, withDb } from '../helpers/raw-agent.js';

const dbs = await databases();
const CORE_TABLES = ['settings', 'agents', 'agent_connections', 'users', 'sessions', 'api_tokens', 'audit_log'];

describe.each(dbs)('foundation ops (%s)', (db) => {
  afterAll(cleanup);

  it('a server restart brings every agent back online and closes the old connection rows (`server shutdown`)', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const agents = [0, 1, 2].map((i) => startAgent(s, { name: `rs-${i}` }));
    const ids = await Promise.all(agents.map(agentId));
    for (const id of ids) await api.waitAgent(id, 'online');
    await s.stop();
    const rowsAfterStop = await withDb(s.dbUrl, (k) => k('agent_connections').whereIn('agent_id', ids));
    expect(rowsAfterStop).toHaveLength(3);
    for (const r of rowsAfterStop) {
      expect(r.disconnected_at, 'closed at shutdown').not.toBeNull();
      expect(r.reason).toBe('server shutdown');
    }
    const s2 = await s.restart();
    const api2 = await Api.login(s2.url);
    for (const id of ids) await api2.waitAgent(id, 'online', 30_000);
    for (const id of ids) {
      const rows = (await api2.get(`/api/agents/${id}/connections`)).body.items;
      expect(rows).toHaveLength(2);
      expect(rows[0].disconnectedAt).toBeNull();
      expect(rows[1]).toMatchObject({ reason: 'server shutdown' });
    }
    // Agents survived the restart as processes; nothing made them exit.
    expect(agents.every((a) => a.proc.exitCode === null)).toBe(true);
    await s2.stop();
  });

  it('after a server crash (SIGKILL) the next start closes dangling rows with `server restart`', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const agents = [0, 1].map((i) => startAgent(s, { name: `crash-${i}` }));
    const ids = await Promise.all(agents.map(agentId));
    for (const id of ids) await api.waitAgent(id, 'online');
    await s.kill();
    const dangling = await withDb(s.dbUrl, (k) => k('agent_connections').whereIn('agent_id', ids).whereNull('disconnected_at'));
    expect(dangling).toHaveLength(2);
    const s2 = await s.restart();
    expect(s2.output()).toContain('closed connection rows left open by the previous run');
    const api2 = await Api.login(s2.url);
    for (const id of ids) await api2.waitAgent(id, 'online', 30_000);
    const old = await withDb(s.dbUrl, (k) =>
      k('agent_connections').whereIn(
        'id',
        dangling.map((r) => r.id),
      ),
    );
    for (const r of old) {
      expect(r.reason).toBe('server restart');
      expect(Number(r.duration_ms)).toBeGreaterThanOrEqual(0);
    }
    await s2.stop();
  });

  it('sheds a connection storm with 503 + Retry-After, and agents honour it', async () => {
    // Enrolling agents draw from the anonymous bucket (known agents from their own).
    const s = await startServer({ db, env: { MUSTER_AGENT_CONNECT_RATE: '1', MUSTER_ANON_CONNECT_RATE: '1' } });
    const api = await Api.login(s.url);
    // The bucket holds one token: the first upgrade spends it (and fails auth), the next is shed.
    await upgradeStatus(s.wsUrl, { 'X-Muster-Agent-Id': 'x' });
    const shed = await upgradeStatus(s.wsUrl, { 'X-Muster-Agent-Id': 'x' });
    expect(shed.status).toBe(503);
    expect(Number(shed.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(shed.body).error.code).toBe('unavailable');
    const agents = [0, 1, 2, 3].map((i) =>
      startAgent(s, {
        name: `storm-${i}`,
        args: ['--log-level', 'debug'],
        env: { MUSTER_AGENT_BACKOFF_MAX_MS: '60000' },
      }),
    );
    const ids = await Promise.all(agents.map(agentId));
    for (const id of ids) await api.waitAgent(id, 'online', 90_000);
    // At least one agent was shed; each shed agent waited at least Retry-After before retrying.
    let honoured = 0;
    for (const a of agents) {
      const lines = a
        .output()
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return {};
          }
        });
      lines.forEach((l, i) => {
        if (!String(l.msg).startsWith('cannot connect') || l.status !== 503) return;
        const next = lines.slice(i + 1).find((n) => n.msg === 'reconnecting');
        expect(next, 'a reconnect after the 503').toBeDefined();
        expect(next.retryAfter).toBe(true);
        expect(next.delay).toBeGreaterThanOrEqual(l.retryAfterSec * 1000);
        honoured++;
      });
    }
    expect(honoured).toBeGreaterThan(0);
    const m = await scrape(s.url);
    expect(m.get('muster_upgrades_rejected_total{channel="agent",status="503"}')).toBeGreaterThanOrEqual(honoured + 1);
    await s.stop();
  }, 120_000);

  it('agent health endpoint: 200 connected, 503 with a reason once the server is unreachable; /metrics counters', async () => {
    const s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: '500' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'health-1', args: ['--health-port=0'], env: { MUSTER_AGENT_UNREACHABLE_AFTER_SEC: '1' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const portFile = path.join(a.stateDir, 'health.port');
    const port = Number(await waitFor(() => fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim(), 'health.port'));
    const h = await fetch(`http://127.0.0.1:${port}/health`);
    expect(h.status).toBe(200);
    expect(await h.json()).toMatchObject({ status: 'connected', agentId: id, connection: { state: 'connected' } });
    await waitFor(
      async () => /muster_agent_heartbeats_sent_total [1-9]/.test(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()),
      'heartbeat counter',
    );
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(metrics).toMatch(/^muster_agent_connects_total 1$/m);
    expect((await fetch(`http://127.0.0.1:${port}/nope`)).status).toBe(404);
    await s.stop();
    const down = await waitFor(async () => {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      return r.status === 503 ? ((await r.json()) as any) : null;
    }, '/health 503');
    expect(down.status).toBe('unreachable');
    expect(down.reason).toMatch(/server unreachable for \d+ s/);
    const s2 = await s.restart();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200, '/health 200 again');
    expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toMatch(/^muster_agent_disconnects_total [1-9]/m);
    await a.stop();
    await s2.stop();
  });

  it('a frozen server (SIGSTOP) is noticed by the agent: it reconnects, and /health turns 503', async () => {
    const s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: '500' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'frozen-server', args: ['--health-port=0'], env: { MUSTER_AGENT_UNREACHABLE_AFTER_SEC: '1' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const portFile = path.join(a.stateDir, 'health.port');
    const port = Number(await waitFor(() => fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim(), 'health.port'));
    s.proc.kill('SIGSTOP');
    try {
      // The TCP connection stays open (nothing sends FIN or RST): only the agent's pings can tell.
      await waitFor(() => a.output().includes('server silent; reconnecting'), 'agent to notice the silence', 20_000);
      const down = await waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${port}/health`);
        return r.status === 503 ? ((await r.json()) as any) : null;
      }, '/health 503');
      expect(down.reason).toMatch(/server unreachable for \d+ s/);
    } finally {
      s.proc.kill('SIGCONT');
    }
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200, '/health 200 again', 30_000);
    await api.waitAgent(id, 'online', 30_000);
    await a.stop();
    await s.stop();
  }, 90_000);

  it('migrations run up, down and up again', async () => {
    let k: Knex;
    let drop = async () => {};
    if (db === 'mysql') {
      const m = await createMysqlDatabase();
      drop = m.drop;
      const u = new URL(m.url);
      k = knexFactory({ client: 'mysql2', connection: { host: u.hostname, port: Number(u.port), user: 'root', password: '', database: u.pathname.slice(1) } });
    } else {
      k = knexFactory({ client: 'better-sqlite3', connection: { filename: path.join(tmpDir('mig'), 'm.db') }, useNullAsDefault: true });
    }
    try {
      const tables = async () => {
        const out: string[] = [];
        for (const t of CORE_TABLES) if (await k.schema.hasTable(t)) out.push(t);
        return out;
      };
      await k.migrate.latest({ migrationSource });
      expect(await tables()).toEqual(CORE_TABLES);
      // Data round-trips through the schema (utf8mb4 on MariaDB: emoji survive).
      await k('agents').insert({
        id: 'a1',
        name: 'host-🚀',
        hostname: 'h',
        ips: '[]',
        platform: 'linux',
        arch: 'x64',
        os: 'o',
        version: '1',
        labels: '{}',
        groups: '[]',
        secret_hash: 'x'.repeat(64),
        created_at: Date.now(),
      });
      expect((await k('agents').first()).name).toBe('host-🚀');
      await k.migrate.rollback({ migrationSource }, true);
      expect(await tables()).toEqual([]);
      await k.migrate.latest({ migrationSource });
      expect(await tables()).toEqual(CORE_TABLES);
      const [, pending] = (await k.migrate.list({ migrationSource })) as [unknown[], unknown[]];
      expect(pending).toHaveLength(0);
    } finally {
      await k.destroy();
      await drop();
    }
  });
});

describe('foundation config errors', () => {
  const run = (script: string, env: Record<string, string>, args: string[] = []) =>
    spawnSync(process.execPath, [script, ...args], {
      env: { ...process.env, MUSTER_DATA_DIR: tmpDir('badcfg'), MUSTER_LOCAL_AGENT: '0', ...env },
      encoding: 'utf8',
      timeout: 20_000,
    });

  it.each([
    [{ MUSTER_PORT: 'eighty' }, /MUSTER_PORT/],
    [{ MUSTER_PORT: '70000' }, /MUSTER_PORT/],
    [{ MUSTER_DB_URL: 'postgres://x/y' }, /MUSTER_DB_URL: must start with mysql/],
    [{ MUSTER_TLS_CERT: '/tmp/cert.pem' }, /MUSTER_TLS_CERT and MUSTER_TLS_KEY must be set together/],
    [{ MUSTER_ADMIN_PASSWORD: 'short' }, /MUSTER_ADMIN_PASSWORD must be at least 8/],
    [{ MUSTER_HEARTBEAT_INTERVAL_MS: '-5' }, /MUSTER_HEARTBEAT_INTERVAL_MS/],
    [{ MUSTER_PUBLIC_URL: 'not a url' }, /MUSTER_PUBLIC_URL/],
  ])('server exits non-zero with a clear message: %o', (env, msg) => {
    const r = run(SERVER_JS, env);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/invalid configuration/);
    expect(r.stderr).toMatch(msg);
    expect(r.stdout).not.toMatch(/listening/);
  });

  it('an unreachable database exits non-zero with the reason', () => {
    const r = run(SERVER_JS, { MUSTER_DB_URL: 'mysql://root@127.0.0.1:1/none', MUSTER_PORT: '0' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/failed to start/);
  });

  it('agent: bad flags exit 2 with a clear message; --version prints the version', () => {
    const noServer = run(AGENT_JS, {}, ['--state-dir', tmpDir('ag')]);
    expect(noServer.status).toBe(2);
    expect(noServer.stderr).toMatch(/server/);
    const badUrl = run(AGENT_JS, {}, ['--server', 'http://x', '--state-dir', tmpDir('ag')]);
    expect(badUrl.status).toBe(2);
    expect(badUrl.stderr).toMatch(/ws:\/\/ or wss:\/\//);
    const badLabel = run(AGENT_JS, {}, ['--server', 'ws://x', '--label', 'novalue', '--state-dir', tmpDir('ag')]);
    expect(badLabel.status).toBe(2);
    expect(badLabel.stderr).toMatch(/--label wants k=v/);
    const unknown = run(AGENT_JS, {}, ['--server', 'ws://x', '--bogus']);
    expect(unknown.status).toBe(2);
    const v = run(AGENT_JS, {}, ['--version']);
    expect(v.status).toBe(0);
    expect(v.stdout.trim()).toBe('0.1.0');
  });
});
