import { AuditLog } from './auth/audit.js';
import type { ApiRouter } from './http/api-router.js';
import { AuthService } from './auth/auth-service.js';
import { EnrollmentTokens } from './auth/enrollment.js';
import type { Bus } from './bus/bus.js';
import { AgentCommands } from './cluster/agent-commands.js';
import { EnrollmentPeers } from './cluster/enrollments.js';
import { createCluster, type Cluster } from './cluster/cluster.js';
import type { Leases } from './cluster/lease.js';
import { AgentOwnership } from './cluster/ownership.js';
import type { Config } from './config/config.js';
import { migrateLatest, openDb, setQueryTimeout, type Db, type Dialect } from './db/db.js';
import { DiskGuard } from './db/disk-guard.js';
import { DbReadiness } from './db/readiness.js';
import { setTxRetry } from './db/retry.js';
import { TxBatcher } from './db/tx-batcher.js';
import { Fleet } from './fleet/fleet.js';
import { AgentRepo, ConnectionRepo } from './fleet/repo.js';
import type { Logger } from './log.js';
import { createMetrics, type Metrics } from './metrics.js';
import type { AgentBinaryHandlers, AgentHandlers, ConsoleBinaryHandlers, ConsoleHandlers } from './ws/handlers.js';

/** Shared services every capability is built from (composed in server.ts). */
export interface Core {
  config: Config;
  db: Db;
  dialect: Dialect;
  log: Logger;
  metrics: Metrics;
  bus: Bus;
  /** Timers that must run once in the cluster ask here first (always held on one node). */
  leases: Leases;
  /**
   * The cluster as capabilities see it: whether it is on, the node-addressed link (node-link.ts)
   * and which node holds an agent's socket. On one node the same interface, in process.
   */
  nodes: Pick<Cluster, 'enabled' | 'link' | 'agentNode' | 'nodes' | 'nodeUrl' | 'blobs' | 'onNodeLost'>;
  fleet: Fleet;
  /** Messages for an agent connected to any node (cluster/agent-commands.ts). */
  commands: AgentCommands;
  /** Open enrollments on the other nodes (cluster/enrollments.ts; on one node nobody is asked). */
  enrollments: EnrollmentPeers;
  audit: AuditLog;
  auth: AuthService;
  /** Enrollment tokens (and MUSTER_ENROLL_TOKEN when set). */
  enrollment: EnrollmentTokens;
  /** Absolute path of the data dir (SQLite, artifacts, recordings). */
  dataDir: string;
  /** Free space of the data dir against its reserve (bulk writers ask before writing). */
  disk: DiskGuard;
  /** Base URL agents can reach this server at (used in download URLs). */
  serverUrl: () => string;
}

/** A capability (exec, terminals, updates): its routes, socket handlers and lifetime. */
export interface Capability<A extends keyof AgentHandlers, C extends keyof ConsoleHandlers> {
  agentHandlers: Pick<AgentHandlers, A>;
  consoleHandlers: Pick<ConsoleHandlers, C>;
  /** Its REST routes (mounted under /api in the order capabilities are listed in server.ts). */
  routes?: ApiRouter | ApiRouter[];
  start?(): Promise<void>;
  stop?(): Promise<void>;
}
export type { AgentBinaryHandlers, ConsoleBinaryHandlers };

/** The shared services, opened: the database migrated, the fleet not loaded yet (Fleet.start). */
export interface OpenCore {
  core: Core;
  /** The fleet's stores (its REST routes read connection history and write agents). */
  agentRepo: AgentRepo;
  connections: ConnectionRepo;
  /** The database half of /readyz. */
  readiness: DbReadiness;
  /** MUSTER_NATS_URL: the bus between nodes and the leases (attached to the fleet once it is loaded). */
  cluster: Cluster;
  /** Flushes the audit log, closes the bus and the database (after every capability stopped). */
  close(): Promise<void>;
}

/** Opens the database (migrating it) and makes the shared services every capability is built from. */
export async function openCore(config: Config, log: Logger, serverUrl: () => string): Promise<OpenCore> {
  const { db, dialect, describe } = openDb(config.dbUrl, config.dataDir, {
    connectTimeoutMs: config.dbConnectTimeoutMs,
    acquireTimeoutMs: config.dbAcquireTimeoutMs,
  });
  log.info({ db: describe }, 'database');
  await migrateLatest(db);
  // After the migrations (which may run long on a large database): every statement is bounded.
  setQueryTimeout(db, config.dbQueryTimeoutMs);
  setTxRetry(db, { retries: config.dbDeadlockRetries, backoffMs: config.dbDeadlockBackoffMs });
  const metrics = createMetrics();
  // MUSTER_NATS_URL: the bus carries events between nodes, leases run timers once in the cluster.
  const cluster = await createCluster(config, log, metrics, db);
  const bus = cluster.bus;
  const audit = new AuditLog(db, {
    refusalWindowMs: config.auditRefusalWindowSec * 1000,
    onError: (err) => log.error({ err }, 'could not write an audit record'),
  });
  const auth = new AuthService(db, config.sessionTtlSec, bus, { maxTokensPerUser: config.maxTokensPerUser });
  const agentRepo = new AgentRepo(db);
  const connections = new ConnectionRepo(db);
  const fleet = new Fleet({
    repo: agentRepo,
    connections,
    bus,
    log,
    metrics,
    nodeId: config.nodeId,
    writes: new TxBatcher(db),
    ownership: new AgentOwnership(db, config.nodeId, cluster.peers),
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    flushMs: config.presenceFlushMs,
    persistMs: config.presencePersistMs,
    connectGather: { gatherMs: config.connectWriteGatherMs, maxGroup: config.connectWriteGroupMax },
  });
  // No implicit shared token: enrollment tokens are created by admins (stored hashed), and the
  // single MUSTER_ENROLL_TOKEN works only when set explicitly.
  const enrollment = new EnrollmentTokens(db, { staticToken: config.enrollToken, serverUrl, updatePublicKey: config.updatePublicKey });
  // SQLite's WAL can hold megabytes that a checkpoint gives back to a full disk.
  const disk = new DiskGuard({
    dir: config.dataDir,
    reserveBytes: config.diskReserveBytes,
    log,
    onLow: dialect === 'sqlite' ? async () => void (await db.raw('PRAGMA wal_checkpoint(TRUNCATE)')) : undefined,
  });
  disk.start();
  const commands = new AgentCommands({ link: cluster.link, fleet, agentNode: (id) => cluster.agentNode(id) });
  const enrollments = new EnrollmentPeers({ link: cluster.link, fleet, nodes: () => cluster.nodes() });
  const core: Core = {
    config,
    db,
    dialect,
    log,
    metrics,
    bus,
    leases: cluster.leases,
    nodes: cluster,
    fleet,
    commands,
    enrollments,
    audit,
    auth,
    enrollment,
    dataDir: config.dataDir,
    serverUrl,
    disk,
  };
  return {
    core,
    agentRepo,
    connections,
    cluster,
    readiness: new DbReadiness(db, config.readyTimeoutMs),
    async close() {
      commands.close();
      enrollments.close();
      await audit.flush();
      await cluster.close();
      disk.stop();
      await db.destroy();
    },
  };
}
