import { connect } from 'nats';
import { cleanup, createMysqlDatabase, freePort, startServer, type TestServer } from './harness.js';

/** The local NATS with JetStream (MUSTER_TEST_NATS_URL overrides it). */
export const TEST_NATS_URL = process.env['MUSTER_TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';

/**
 * A test cluster: a cluster prefix of this test file's own (parallel files never share subjects,
 * streams or leases), the environment of each node (short lease, heartbeat and presence intervals
 * so takeovers happen within a test), and `drop` to delete its key-value streams afterwards.
 */
export function testCluster(opts: { leaseTtlMs?: number } = {}): { name: string; env(node: string): Record<string, string>; drop(): Promise<void> } {
  const name = `t${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  return {
    name,
    env: (node) => ({
      MUSTER_NATS_URL: TEST_NATS_URL,
      MUSTER_CLUSTER: name,
      MUSTER_NODE_ID: node,
      MUSTER_CLUSTER_LEASE_TTL_MS: String(opts.leaseTtlMs ?? 3000),
      MUSTER_HEARTBEAT_INTERVAL_MS: '1000',
      MUSTER_PRESENCE_FLUSH_MS: '300',
      MUSTER_LOCAL_AGENT: 'false',
    }),
    drop: async () => {
      const nc = await connect({ servers: TEST_NATS_URL });
      const jsm = await nc.jetstreamManager();
      for (const x of ['leases', 'nodes']) await jsm.streams.delete(`KV_${name}-${x}`).catch(() => {});
      await jsm.streams.delete(`OBJ_${name}-blobs`).catch(() => {});
      await nc.close();
    },
  };
}

export type TestCluster = ReturnType<typeof testCluster>;

/** Three server nodes of `cluster` on a fresh MariaDB database, and how to stop them all. */
export interface ThreeNodes {
  db: { url: string; name: string; drop(): Promise<void> };
  a: TestServer;
  b: TestServer;
  c: TestServer;
  /** Stops every server and agent the file started, drops the database and the cluster's streams. */
  stop(): Promise<void>;
}

/**
 * Starts node-a first (it takes the leases; `afterFirst` may wait for that), then node-b and
 * node-c together, each with `env(node)` (the cluster's own environment by default).
 */
export async function startThreeNodes(
  cluster: TestCluster,
  opts: {
    env?: (node: string) => Record<string, string>;
    afterFirst?: () => Promise<unknown>;
    /** Nodes given their own address (MUSTER_NODE_URL = http://127.0.0.1:<port>, on a port chosen first). */
    nodeUrls?: string[];
  } = {},
): Promise<ThreeNodes> {
  const env = opts.env ?? cluster.env;
  const db = await createMysqlDatabase();
  const start = async (node: string) => {
    if (!opts.nodeUrls?.includes(node)) return startServer({ dbUrl: db.url, env: env(node) });
    const port = await freePort();
    return startServer({ dbUrl: db.url, port, env: { ...env(node), MUSTER_NODE_URL: `http://127.0.0.1:${port}` } });
  };
  const a = await start('node-a');
  await opts.afterFirst?.();
  const [b, c] = await Promise.all([start('node-b'), start('node-c')]);
  return {
    db,
    a,
    b,
    c,
    stop: async () => {
      await cleanup();
      await db.drop();
      await cluster.drop();
    },
  };
}
