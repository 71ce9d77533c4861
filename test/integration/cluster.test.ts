import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'nats';
import {
  Api,
  agentId,
  cleanup,
  consoleSocket,
  createMysqlDatabase,
  startAgent,
  startServer,
  waitFor,
  type TestAgent,
  type TestServer,
} from '../helpers/harness.js';
import { helloAgent, readCreds, withDb } from '../helpers/raw-agent.js';

/**
 * Three real server nodes (dist/server.js) on one MariaDB database and one NATS, with a cluster
 * prefix of their own: one fleet from every node, takeover between nodes, and kill -9 of a node.
 * NATS (127.0.0.1:4222, JetStream) and MariaDB are mandatory here (.ci/run starts both).
 */
const NATS = process.env['MUSTER_TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const CLUSTER = `t${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const TTL_MS = 3000;
const env = (node: string) => ({
  MUSTER_NATS_URL: NATS,
  MUSTER_CLUSTER: CLUSTER,
  MUSTER_NODE_ID: node,
  MUSTER_CLUSTER_LEASE_TTL_MS: String(TTL_MS),
  MUSTER_HEARTBEAT_INTERVAL_MS: '1000',
  MUSTER_PRESENCE_FLUSH_MS: '300',
});

let db: { url: string; drop(): Promise<void> };
const nodes: Record<string, TestServer> = {};
const apis: Record<string, Api> = {};
let agent: TestAgent;
let id = '';

const connectionsOf = async (api: Api) =>
  (await api.get(`/api/agents/${id}/connections?limit=50`)).body.items as { node: string | null; disconnectedAt: string | null; reason: string | null }[];
const ownerOf = async (api: Api) => (await connectionsOf(api)).find((c) => c.disconnectedAt === null)?.node ?? null;

beforeAll(async () => {
  db = await createMysqlDatabase();
  // The first node runs the migrations; the others start together.
  nodes['node-a'] = await startServer({ dbUrl: db.url, env: env('node-a') });
  const [b, c] = await Promise.all([startServer({ dbUrl: db.url, env: env('node-b') }), startServer({ dbUrl: db.url, env: env('node-c') })]);
  nodes['node-b'] = b;
  nodes['node-c'] = c;
  for (const [n, s] of Object.entries(nodes)) apis[n] = await Api.login(s.url);
});

afterAll(async () => {
  await cleanup();
  await db.drop();
  const nc = await connect({ servers: NATS });
  const jsm = await nc.jetstreamManager();
  for (const b of ['leases', 'nodes']) await jsm.streams.delete(`KV_${CLUSTER}-${b}`).catch(() => {});
  await nc.close();
});

describe('cluster: three server nodes on NATS and one MariaDB', () => {
  it('refuses SQLite with a clear message', async () => {
    await expect(startServer({ db: 'sqlite', env: env('node-x') })).rejects.toThrow(/cluster needs a shared MySQL\/MariaDB database/);
  });

  it('one fleet: an agent on one node is seen online live by consoles on the others, with the same GET /api/agents everywhere', async () => {
    const consoles = Object.fromEntries(await Promise.all(Object.entries(nodes).map(async ([n, s]) => [n, await consoleSocket(s, apis[n]!)] as const)));
    const urls = Object.values(nodes)
      .map((s) => s.wsUrl)
      .join(',');
    agent = startAgent(nodes['node-a']!, { serverUrl: urls, name: 'roamer' });
    id = await agentId(agent);
    // Every console, on every node, hears the agent come online.
    for (const [n, c] of Object.entries(consoles)) await c.next((m) => m.type === 'agent.online' && m.agent.id === id, 20_000, `agent.online on ${n}`);
    const owner = await waitFor(() => ownerOf(apis['node-a']!), 'owning node');
    process.stderr.write(`agent connected to ${owner}\n`);
    for (const [n, api] of Object.entries(apis)) {
      const rows = async () => ((await api.get('/api/agents?limit=100')).body.items as any[]).map((a) => [a.id, a.name, a.status]);
      await waitFor(async () => JSON.stringify(await rows()) === JSON.stringify([[id, 'roamer', 'online']]), `the fleet on ${n}`, 10_000);
    }
    // Heartbeat metrics reach the nodes that do not hold the socket.
    for (const [n, api] of Object.entries(apis)) {
      if (n === owner) continue;
      await waitFor(async () => (await api.get(`/api/agents/${id}`)).body.metrics?.cpuPercent !== undefined, `metrics on ${n}`, 15_000);
    }
    // Ownership and generation are recorded.
    const row = await withDb(db.url, (k) => k('agents').where({ id }).first('owner_node', 'conn_generation'));
    expect(row.owner_node).toBe(owner);
    expect(Number(row.conn_generation)).toBeGreaterThanOrEqual(1);
    for (const c of Object.values(consoles)) c.close();
  });

  it('a newer connection on another node replaces the older one, fenced by generation, and the agent never goes offline', async () => {
    const owner = (await ownerOf(apis['node-a']!))!;
    const other = Object.keys(nodes).find((n) => n !== owner)!;
    const watcher = Object.keys(nodes).find((n) => n !== owner && n !== other)!;
    const seen = await consoleSocket(nodes[watcher]!, apis[watcher]!);
    const before = await withDb(db.url, (k) => k('agents').where({ id }).first('conn_generation'));
    // The real agent freezes (its socket stays open on `owner`); a new connection of the same
    // agent arrives at `other`.
    agent.proc.kill('SIGSTOP');
    try {
      const raw = await helloAgent(nodes[other]!.wsUrl, readCreds(agent.stateDir));
      await waitFor(async () => (await connectionsOf(apis[watcher]!)).some((c) => c.node === owner && c.reason === 'replaced'), 'old socket replaced', 15_000);
      const after = await withDb(db.url, (k) => k('agents').where({ id }).first('owner_node', 'conn_generation'));
      expect(after.owner_node).toBe(other);
      expect(Number(after.conn_generation)).toBeGreaterThan(Number(before.conn_generation));
      for (const api of Object.values(apis)) expect((await api.get(`/api/agents/${id}`)).body.status).toBe('online');
      expect(seen.messages.filter((m) => m.type === 'agent.offline' && m.agentId === id)).toEqual([]);
      raw.close();
    } finally {
      agent.proc.kill('SIGCONT');
    }
    seen.close();
    // The real agent comes back (on some node) and owns it again.
    await waitFor(
      async () => {
        const r = await withDb(db.url, (k) => k('agents').where({ id }).first('owner_node'));
        return r.owner_node && (await ownerOf(apis['node-a']!)) === r.owner_node ? r.owner_node : null;
      },
      'agent back',
      30_000,
    );
  });

  it("a reconnect elsewhere with new labels reaches every node's record; with the same facts it changes nothing", async () => {
    const [x, y, z] = Object.keys(nodes) as [string, string, string];
    const rawId = `relabel-${CLUSTER}`;
    const first = await helloAgent(nodes[x]!.wsUrl, { agentId: rawId, enrollToken: nodes[x]!.enrollToken }, { labels: { tier: 'one' } });
    const creds = { agentId: rawId, secret: first.welcome.secret as string };
    const labelsOn = async (n: string) => (await apis[n]!.get(`/api/agents/${rawId}`)).body?.labels?.tier;
    await waitFor(async () => (await labelsOn(z)) === 'one', 'labels on the third node', 15_000);
    first.close();
    await first.closed;
    // Back through another node, reporting other labels: the third node reads them.
    const second = await helloAgent(nodes[y]!.wsUrl, creds, { labels: { tier: 'two' } });
    await waitFor(
      async () => (await labelsOn(z)) === 'two' && (await apis[z]!.get(`/api/agents/${rawId}`)).body.status === 'online',
      'new labels on the third node',
      15_000,
    );
    second.close();
    await second.closed;
    // And back with the same facts: still right everywhere.
    const third = await helloAgent(nodes[x]!.wsUrl, creds, { labels: { tier: 'two' } });
    for (const n of [x, y, z])
      await waitFor(
        async () => (await labelsOn(n)) === 'two' && (await apis[n]!.get(`/api/agents/${rawId}`)).body.status === 'online',
        `labels on ${n}`,
        15_000,
      );
    third.close();
  });

  it('kill -9 of the owning node: the agent is back through another node within 30 s, and the lost connection is recorded as node lost', async () => {
    const owner = (await waitFor(async () => {
      const o = await ownerOf(apis['node-a']!);
      return o && (await apis['node-a']!.get(`/api/agents/${id}`)).body.status === 'online' ? o : null;
    }, 'owner'))!;
    const survivors = Object.keys(nodes).filter((n) => n !== owner);
    const t0 = Date.now();
    await nodes[owner]!.kill();
    const api = apis[survivors[0]!]!;
    const back = await waitFor(
      async () => {
        const o = await ownerOf(api);
        return o && o !== owner ? o : null;
      },
      'agent back on another node',
      30_000,
    );
    const took = Date.now() - t0;
    process.stderr.write(`agent back on ${back} after ${took} ms\n`);
    expect(took).toBeLessThan(30_000);
    for (const n of survivors) await apis[n]!.waitAgent(id, 'online', 10_000);
    // The killed node's row is closed by the presence lease holder once the node left the registry.
    await waitFor(async () => (await connectionsOf(api)).some((c) => c.node === owner && c.reason === 'node lost'), 'node lost recorded', 4 * TTL_MS + 10_000);
    // Still online everywhere (the `node lost` sweep must not mark an agent that moved on offline).
    for (const n of survivors) expect((await apis[n]!.get(`/api/agents/${id}`)).body.status).toBe('online');
  });

  it('timers run under leases: one holder per lease; kill -9 of the holder and another node holds it within the TTL', async () => {
    const leasesOf = async (s: TestServer) => {
      const text = await (await fetch(`${s.url}/metrics`)).text();
      return Object.fromEntries([...text.matchAll(/^muster_cluster_leases_held\{lease="(\w+)"\} (\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
    };
    const alive = () => Object.keys(nodes).filter((n) => nodes[n]!.proc.exitCode === null && nodes[n]!.proc.signalCode === null);
    const names = ['presence', 'schedules', 'notifications'];
    const holders = async () => {
      const all = await Promise.all(alive().map(async (n) => [n, await leasesOf(nodes[n]!)] as const));
      return Object.fromEntries(names.map((l) => [l, all.filter(([, x]) => x[l] === 1).map(([n]) => n)]));
    };
    const before = await waitFor(
      async () => {
        const h = await holders();
        return names.every((l) => h[l]!.length === 1) ? h : null;
      },
      'exactly one holder per lease',
      20_000,
    );
    const victim = before['schedules']![0]!;
    expect(alive().length).toBeGreaterThanOrEqual(2);
    const t0 = Date.now();
    await nodes[victim]!.kill();
    const after = await waitFor(
      async () => {
        const h = await holders();
        return names.every((l) => h[l]!.length === 1) ? h : null;
      },
      'leases taken over',
      4 * TTL_MS,
    );
    const took = Date.now() - t0;
    process.stderr.write(`leases ${JSON.stringify(before)} -> ${JSON.stringify(after)} after ${took} ms\n`);
    expect(after['schedules']![0]).not.toBe(victim);
    // Expiry one TTL after the last renewal, one retry interval, and the metrics scrape.
    expect(took).toBeLessThan(TTL_MS + TTL_MS / 3 + 2000);
  });
});
