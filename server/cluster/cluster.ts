import { connect, Events, type KV, type NatsConnection } from 'nats';
import client from 'prom-client';
import { LocalBus, type Bus } from '../bus/bus.js';
import type { Config } from '../config/config.js';
import type { Db } from '../db/db.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRepo } from '../fleet/repo.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { SharedBlobs } from './blobs.js';
import { KvLeases, LocalLeases, type Leases } from './lease.js';
import { NatsBus } from './nats-bus.js';
import { LocalNodeLink, NatsNodeLink, type NodeLink } from './node-link.js';
import type { OwnershipPeers } from './ownership.js';
import { ClusterPresence } from './presence.js';

/** This node's place in the cluster (or a cluster of one). */
export interface Cluster {
  readonly enabled: boolean;
  readonly bus: Bus;
  readonly leases: Leases;
  /** Ownership peers for the fleet (null on one node). */
  readonly peers: OwnershipPeers | null;
  /** Node-addressed messages (node-link.ts): reach the node that holds an agent's socket. */
  readonly link: NodeLink;
  /** Content every node reads (agent packages, file revisions): the NATS object store `<cluster>-blobs`; null on one node (the data dir). */
  readonly blobs: SharedBlobs | null;
  /**
   * The node that holds the agent's socket as far as this node knows: this node's id when it is
   * connected here, another node's id when it is online there, null when it is offline.
   */
  agentNode(agentId: string): string | null;
  /** After the fleet is loaded: other nodes' agents, takeovers, the dead-node sweep. */
  attach(fleet: Fleet, deps: { repo: AgentRepo }): Promise<void>;
  /** Nodes in the registry now (this one on a single node). */
  nodes(): string[];
  /** Where consoles reach `node` itself (its MUSTER_NODE_URL, as it registered it); null when it gave none or is not live. */
  nodeUrl(node: string): string | null;
  /**
   * Calls `fn` when the dead-node sweep (on the `presence` lease holder) finds a node missing from
   * the registry for one lease TTL that still owns agents or running tasks, after its agents were
   * given up. A hook that throws is called again at the next sweep. Never called on one node.
   * Returns the unsubscribe function.
   */
  onNodeLost(fn: (node: string) => Promise<void>): () => void;
  close(): Promise<void>;
}

/** A cluster of one: the in-process bus, every lease held. */
export function singleNode(config: Config, log: Logger): Cluster {
  const bus = new LocalBus((err, topic) => log.error({ err, topic }, 'bus subscriber failed'));
  const link = new LocalNodeLink(config.nodeId, (err, kind) => log.error({ err, kind }, 'node message handler failed'));
  let fleetRef: Fleet | null = null;
  return {
    enabled: false,
    bus,
    leases: new LocalLeases(config.nodeId),
    peers: null,
    link,
    blobs: null,
    agentNode: (id) => (fleetRef?.isOnline(id) ? config.nodeId : null),
    attach: async (fleet) => {
      fleetRef = fleet;
    },
    nodes: () => [config.nodeId],
    nodeUrl: (node) => (node === config.nodeId ? (config.nodeUrl ?? null) : null),
    onNodeLost: () => () => {},
    close: async () => {
      link.close();
      await bus.close();
    },
  };
}

/**
 * NATS connection options from MUSTER_NATS_URL: the official client does not read credentials from
 * a server URL, so `nats://user:pass@host` (or `nats://token@host`) is taken apart here. Every URL
 * that carries credentials must carry the same; the servers are returned without them (they are
 * what logs and error messages show).
 */
export function natsAuth(urls: string[]): { servers: string[]; user?: string; pass?: string; token?: string } {
  let creds: { user?: string; pass?: string; token?: string } | null = null;
  let credsOf = '';
  const servers = urls.map((raw) => {
    const u = new URL(raw);
    if (!u.username && !u.password) return raw;
    const c = u.password ? { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) } : { token: decodeURIComponent(u.username) };
    const key = JSON.stringify(c);
    if (creds && key !== credsOf) throw new Error('MUSTER_NATS_URL: the URLs carry different credentials; give every server the same (or only the first)');
    creds = c;
    credsOf = key;
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  });
  return { servers, ...(creds ?? {}) };
}

/** KV keys allow [-/_=.A-Za-z0-9]: a node id (a hostname, say) is stored base64url-encoded. */
const nodeKey = (id: string) => Buffer.from(id, 'utf8').toString('base64url');
const nodeOfKey = (k: string) => Buffer.from(k, 'base64url').toString('utf8');

/**
 * Joins the cluster when MUSTER_NATS_URL is set (else `singleNode`): connects to NATS (reconnecting
 * forever), registers this node in the `<cluster>-nodes` KV bucket (entries expire after the lease
 * TTL unless renewed), takes leases in `<cluster>-leases`, and carries bus events on
 * `<cluster>.bus.<topic>`.
 */
export async function createCluster(config: Config, log: Logger, metrics: Metrics, db: Db): Promise<Cluster> {
  if (!config.natsUrl) return singleNode(config, log);
  const clog = log.child({ component: 'cluster' });
  const registers = [metrics.registry];
  const reconnects = new client.Counter({ name: 'muster_cluster_nats_reconnects_total', help: 'Reconnections to NATS', registers });
  const connected = new client.Gauge({ name: 'muster_cluster_nats_connected', help: '1 while connected to NATS', registers });
  const busEvents = new client.Counter({
    name: 'muster_cluster_bus_events_total',
    help: 'Bus events sent to or received from other nodes',
    labelNames: ['direction'],
    registers,
  });
  const nodesGauge = new client.Gauge({ name: 'muster_cluster_nodes', help: 'Server nodes in the cluster registry', registers });
  const leaseGauge = new client.Gauge({ name: 'muster_cluster_leases_held', help: '1 while this node holds the lease', labelNames: ['lease'], registers });

  const { servers, ...auth } = natsAuth(config.natsUrl);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      ...auth,
      name: `muster ${config.cluster} ${config.nodeId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      reconnectJitter: 500,
      pingInterval: 5000,
      maxPingOut: 2,
    });
  } catch (err) {
    throw new Error(`cannot connect to NATS at ${servers.join(',')}: ${(err as Error).message}`);
  }
  connected.set(1);
  clog.info({ servers, cluster: config.cluster, node: config.nodeId }, 'cluster: connected to NATS');
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) {
        connected.set(0);
        clog.warn({ server: String(s.data) }, 'cluster: disconnected from NATS; reconnecting');
      } else if (s.type === Events.Reconnect) {
        connected.set(1);
        reconnects.inc();
        clog.info({ server: String(s.data) }, 'cluster: reconnected to NATS');
      }
    }
  })();

  const bus = new NatsBus(nc, {
    cluster: config.cluster,
    nodeId: config.nodeId,
    onError: (err, topic) => clog.error({ err, topic }, 'bus subscriber failed'),
    count: (d) => busEvents.inc({ direction: d }),
  });
  const link = new NatsNodeLink(nc, {
    cluster: config.cluster,
    nodeId: config.nodeId,
    onError: (err, kind) => clog.error({ err, kind }, 'node message handler failed'),
    count: (d) => busEvents.inc({ direction: d }),
  });
  const js = nc.jetstream();
  const ttl = config.clusterLeaseTtlMs;
  let nodesKv: KV;
  let leasesKv: KV;
  let blobs: SharedBlobs;
  try {
    nodesKv = await js.views.kv(`${config.cluster}-nodes`, { ttl, history: 1 });
    leasesKv = await js.views.kv(`${config.cluster}-leases`, { ttl, history: 1 });
    blobs = new SharedBlobs(await js.views.os(`${config.cluster}-blobs`, { description: 'Muster: content every server node reads (agent packages)' }));
  } catch (err) {
    await nc.close();
    throw new Error(`NATS at ${servers.join(',')} has no JetStream key-value store (start nats-server with -js): ${(err as Error).message}`);
  }
  const leases = new KvLeases(leasesKv, config.nodeId, ttl, clog, undefined, (name, held) => leaseGauge.set({ lease: name }, held ? 1 : 0));

  // The node registry: our entry renewed every third of the TTL; the others read at the same pace.
  const live = new Set<string>([config.nodeId]);
  /** When the registry last answered us: cut off longer than a TTL, the cluster has given our agents up. */
  let registryOkAt = Date.now();
  const missingSince = new Map<string, number>();
  const me = JSON.stringify({ node: config.nodeId, startedAt: new Date().toISOString(), url: config.nodeUrl ?? null });
  /** Each live node's MUSTER_NODE_URL, read from its registry entry (a node restarted with another URL is read again). */
  const urls = new Map<string, string | null>();
  const entryUrl = (v: Uint8Array): string | null => {
    try {
      const u = (JSON.parse(new TextDecoder().decode(v)) as { url?: unknown }).url;
      return typeof u === 'string' && u.length > 0 ? u : null;
    } catch {
      return null;
    }
  };
  const heartbeat = async () => {
    try {
      await nodesKv.put(nodeKey(config.nodeId), me);
      const seen = new Set<string>([config.nodeId]);
      for await (const k of await nodesKv.keys()) seen.add(nodeOfKey(k));
      for (const n of seen) {
        if (n === config.nodeId) continue;
        // Best effort: a URL not read this time is read at the next renewal (consoles are relayed meanwhile).
        const e = await nodesKv.get(nodeKey(n)).catch(() => null);
        if (e && e.operation === 'PUT' && e.value.length > 0) urls.set(n, entryUrl(e.value));
      }
      live.clear();
      for (const n of seen) live.add(n);
      for (const n of [...urls.keys()]) if (!live.has(n)) urls.delete(n);
      nodesGauge.set(live.size);
      registryOkAt = Date.now();
      return true;
    } catch (err) {
      // The put or the listing may have failed only for its answer coming late (an event loop busy
      // for seconds): while this node's entry is in the registry, the other nodes count it live,
      // so it is not cut off (the rule that closes every socket after a TTL without the registry).
      const asked = Date.now();
      try {
        const e = await nodesKv.get(nodeKey(config.nodeId));
        if (e && e.operation === 'PUT' && e.value.length > 0) {
          registryOkAt = Math.max(registryOkAt, asked);
          clog.warn({ err: (err as Error).message }, 'cluster: node registry renewal failed; our entry is still there');
          return true;
        }
      } catch {
        /* not reachable: below */
      }
      clog.warn({ err: (err as Error).message }, 'cluster: node registry not reachable');
      return false;
    }
  };
  await heartbeat();

  const lostHooks = new Set<(node: string) => Promise<void>>();
  const presence = new ClusterPresence({ nc, bus, db, log: clog, cluster: config.cluster, nodeId: config.nodeId, liveNodes: () => live });
  let timer: NodeJS.Timeout | undefined;
  let sweeping = false;
  let fleetRef: Fleet | null = null;
  // The registry entry is renewed on a timer of its own: the sweep's database reads (slow while
  // the database is busy with a reconnect storm) must never hold it back past the TTL, or the
  // other nodes would take this live node's agents for a dead one's.
  let beating = false;
  let beatOk = true;
  let beatTimer: NodeJS.Timeout | undefined;
  const beat = async () => {
    if (beating) return;
    beating = true;
    try {
      beatOk = await heartbeat();
    } finally {
      beating = false;
    }
  };
  const sweep = async () => {
    if (sweeping) return;
    sweeping = true;
    try {
      if (!beatOk) {
        // Partitioned from the cluster: another node's sweep has marked our agents `node lost` and
        // given them up (our writes for them are fenced). Let them go where the cluster is.
        if (Date.now() - registryOkAt > ttl && fleetRef && fleetRef.onlineCount() > 0) {
          const n = fleetRef.kickAll('node lost');
          clog.warn(
            { agents: n, cutOffMs: Date.now() - registryOkAt },
            'cluster: cut off from NATS longer than the lease TTL; closed our agent sockets so they reconnect to another node',
          );
        }
        return;
      }
      if (!leases.held('presence')) return;
      const now = Date.now();
      const dead = new Set<string>();
      for (const n of await presence.owningNodes()) {
        if (live.has(n)) {
          missingSince.delete(n);
          continue;
        }
        const since = missingSince.get(n) ?? now;
        missingSince.set(n, since);
        if (now - since >= ttl) dead.add(n);
      }
      await presence.sweepDeadNodes(dead);
      for (const n of dead) {
        let ok = true;
        for (const fn of [...lostHooks]) {
          try {
            await fn(n);
          } catch (err) {
            ok = false;
            clog.error({ err, node: n }, 'cluster: a node-lost handler failed; it runs again at the next sweep');
          }
        }
        // Kept when a handler failed: the node is still dead at the next sweep, without waiting another TTL.
        if (ok) missingSince.delete(n);
      }
    } catch (err) {
      clog.error({ err }, 'cluster: presence sweep failed');
    } finally {
      sweeping = false;
    }
  };

  let closed = false;
  return {
    enabled: true,
    bus,
    leases,
    peers: presence,
    link,
    blobs,
    agentNode: (id) => (fleetRef?.isOnline(id) ? config.nodeId : presence.ownerOf(id)),
    async attach(fleet, deps) {
      fleetRef = fleet;
      await presence.attach(fleet, deps.repo);
      await leases.start();
      beatTimer = setInterval(() => void beat(), Math.max(100, Math.floor(ttl / 3)));
      beatTimer.unref();
      timer = setInterval(() => void sweep(), Math.max(100, Math.floor(ttl / 3)));
      timer.unref();
    },
    nodes: () => [...live].sort(),
    nodeUrl: (node) => (node === config.nodeId ? (config.nodeUrl ?? null) : live.has(node) ? (urls.get(node) ?? null) : null),
    onNodeLost(fn) {
      lostHooks.add(fn);
      return () => void lostHooks.delete(fn);
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      clearInterval(beatTimer);
      presence.close();
      link.close();
      await leases.close();
      try {
        await nodesKv.delete(nodeKey(config.nodeId));
      } catch {
        /* it expires */
      }
      await bus.close();
      await nc.drain().catch(() => nc.close());
    },
  };
}
