import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { PASSWORD_MIN_LENGTH } from '../../protocol/index.js';

/** Every server limit and tunable, with its default. Loaded once, validated, frozen. */
const Schema = z.object({
  port: z.coerce.number().int().min(0).max(65535).default(8080),
  host: z.string().min(1).default('0.0.0.0'),
  dataDir: z.string().min(1).default('./data'),
  dbUrl: z.string().optional(),
  adminPassword: z.string().min(PASSWORD_MIN_LENGTH, `MUSTER_ADMIN_PASSWORD must be at least ${PASSWORD_MIN_LENGTH} characters`).optional(),
  enrollToken: z.string().min(16, 'MUSTER_ENROLL_TOKEN must be at least 16 characters').optional(),
  localAgent: z
    .enum(['0', '1', 'true', 'false'])
    .default('1')
    .transform((v) => v === '1' || v === 'true'),
  /** NATS servers of the cluster (comma-separated nats:// URLs); unset: one node, in-process bus. */
  natsUrl: z
    .string()
    .optional()
    .transform((v, ctx) => {
      if (v === undefined) return undefined;
      const list = v
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      const bad = list.find((x) => !/^(nats|tls|wss?):\/\/[^\s/]+/.test(x));
      if (bad || list.length === 0) ctx.addIssue({ code: 'custom', message: `not a nats:// URL: ${bad ?? v}` });
      return list;
    }),
  /** Prefix of every NATS subject, stream and KV bucket: several clusters (or test runs) share one NATS. */
  cluster: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,32}$/, 'MUSTER_CLUSTER must be 1-32 letters, digits, _ or -')
    .default('muster'),
  /** Cluster leases (timers that run once in the cluster): held this long without renewal, renewed every third of it. */
  clusterLeaseTtlMs: z.coerce.number().int().min(1000).max(60_000).default(6000),
  /**
   * Batch execution across nodes (server/exec/relay.ts), each table forgetting its oldest entry
   * first when full: executions of other nodes' tasks this node relays for (the owner's next
   * resume restores one), agents whose node is remembered from their hello (past it, presence
   * answers), and tasks of this node followed by consoles on other nodes.
   */
  clusterMaxRelayedExecutions: z.coerce.number().int().min(1000).default(100_000),
  clusterMaxAgentRoutes: z.coerce.number().int().min(1000).default(200_000),
  clusterMaxWatchedTasks: z.coerce.number().int().min(100).default(10_000),
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  publicUrl: z.string().url().optional(),
  /**
   * Where consoles reach this node itself (cluster): a path under the cluster's public address that
   * the balancer routes to this node (`/node/node-1`), or an absolute http(s) URL (API clients).
   * When the node holding an agent has one, a console that asks for it opens that agent's
   * terminals there, so their output is not relayed through another node and NATS.
   */
  nodeUrl: z
    .string()
    .max(512)
    .refine((v) => /^\/[^/]/.test(v) || /^https?:\/\/[^\s]+$/i.test(v), 'a path such as /node/node-1, or an http(s) URL')
    .transform((v) => v.replace(/\/+$/, ''))
    .optional(),
  /** Name of this server node in connection history (several nodes share one database). */
  nodeId: z
    .string()
    .min(1)
    .max(64)
    .default(os.hostname().slice(0, 64) || 'node'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Interval agents are told to heartbeat at; three missed intervals mark an agent offline. */
  heartbeatIntervalMs: z.coerce.number().int().min(100).default(5000),
  /**
   * How often the server pings each agent socket (WebSocket ping; the pong's round trip is a
   * metric); 0 = never. Liveness does not depend on it (missed heartbeats do that), and at 20,000
   * agents a 5 s interval doubled the frames the server handles per agent: 30 s still samples the
   * round trip hundreds of times a second across a large fleet.
   */
  agentPingIntervalMs: z.coerce.number().int().min(0).default(30_000),
  /** At most this many of those pings a second across the node (round-robin over the agents): the RTT metric's cost stays flat with the fleet. */
  agentPingRate: z.coerce.number().int().min(0).default(50),
  /** Notification webhook attempts per delivery (the first included) before it is `failed`. */
  notifyMaxAttempts: z.coerce.number().int().min(1).max(100).default(6),
  /** First retry delay of a notification; doubles per attempt (capped at 10 minutes). */
  notifyRetryBaseMs: z.coerce.number().int().min(10).default(5000),
  /** Time a webhook has to answer one attempt. */
  notifyTimeoutMs: z.coerce.number().int().min(100).default(10_000),
  /** How often "agent offline longer than N minutes" rules are checked. */
  notifySweepMs: z.coerce.number().int().min(50).default(10_000),
  /** Deliveries per rule per minute; events beyond it are dropped (and counted) so a mass failure cannot flood a channel. */
  notifyMaxPerMinute: z.coerce.number().int().min(1).default(120),
  /** Time an agent has after the upgrade to send a valid hello. */
  helloTimeoutMs: z.coerce.number().int().min(100).default(10_000),
  /** Largest WebSocket frame accepted from an agent (ws maxPayload). */
  agentMaxPayload: z.coerce
    .number()
    .int()
    .min(1024)
    .default(4 * 1024 * 1024),
  /**
   * Bulk frames to a console (flowing terminal output, script output, droppable pushes) are
   * written only while its socket holds fewer bytes than this; echoes and control messages go first.
   */
  bulkWriteThreshold: z.coerce
    .number()
    .int()
    .min(1024)
    .default(64 * 1024),
  /**
   * Bulk a console may have unread (not yet answered by the WebSocket ping that follows it),
   * kernel buffers included; 0 = no limit beyond MUSTER_BULK_WRITE_THRESHOLD.
   */
  bulkWindow: z.coerce
    .number()
    .int()
    .min(0)
    .default(256 * 1024),
  /** Largest WebSocket frame accepted from a console. */
  consoleMaxPayload: z.coerce
    .number()
    .int()
    .min(1024)
    .default(256 * 1024),
  /** Droppable pushes (metrics, fleet view deltas) to a console are skipped while its socket holds more than this. */
  consoleSoftBufferBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(1024 * 1024),
  /** A console whose socket holds more than this is too slow and is disconnected (it resyncs on reconnect). */
  consoleHardBufferBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(16 * 1024 * 1024),
  /** Live script output one console may have queued before it is skipped ahead (`exec.gap`; stored output is complete). */
  execConsoleBufferBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(1024 * 1024),
  /**
   * Execution output writer: output queued for the database is flushed every MUSTER_OUTPUT_FLUSH_MS
   * or at MUSTER_OUTPUT_BATCH_BYTES, at most MUSTER_OUTPUT_MAX_FLUSH_BYTES per statement batch; above
   * MUSTER_OUTPUT_HIGH_WATER_BYTES queued the agents sending output are no longer read (backpressure).
   */
  outputFlushMs: z.coerce.number().int().min(1).default(25),
  /**
   * Execution row updates (results) queued at which a write starts at once instead of after
   * MUSTER_OUTPUT_FLUSH_MS: the replies of a large batch arrive in one long turn of the event loop,
   * in which the flush timer does not fire; they are then stored while the rest are read.
   */
  outputBatchUpdates: z.coerce.number().int().min(1).default(1000),
  /**
   * MySQL/MariaDB: execution output and result rows are written from a thread of their own (its own
   * connection), so a batch's replies flooding the main event loop do not hold up the writes'
   * round trips (server/exec/store-thread.ts). Off: written from the main thread. SQLite: always
   * the main thread (its writes are synchronous, no round trips).
   */
  execWriterThread: z
    .enum(['0', '1', 'true', 'false'])
    .default('1')
    .transform((v) => v === '1' || v === 'true'),
  /**
   * An execution's progress before its result (dispatched, running, output byte counts) is written
   * to its row within this many ms, or with its result if that comes first: a short script's row is
   * then written once, not two or three times (issue 17). 0 writes progress with the next flush.
   * Single node only: in a cluster other nodes read a running task's rows, so progress is written
   * at once there.
   */
  execProgressWriteMs: z.coerce.number().int().min(0).max(60_000).default(5000),
  outputBatchBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(4 * 1024 * 1024),
  outputMaxFlushBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(8 * 1024 * 1024),
  outputHighWaterBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(16 * 1024 * 1024),
  /** Invalid messages a peer may send before it is disconnected. */
  maxInvalidMessages: z.coerce.number().int().min(1).default(20),
  /** New connections of known agents (valid secret) accepted per second before the upgrade answers 503 + Retry-After. */
  agentConnectRate: z.coerce.number().int().min(1).default(2000),
  /** Agent upgrades per second without a valid agent secret (enrollments, bad or absent credentials): 503 above. */
  anonConnectRate: z.coerce.number().int().min(1).default(500),
  /** The same per remote address: 429 above. */
  anonConnectRatePerAddress: z.coerce.number().int().min(1).default(50),
  /** Remote addresses whose anonymous upgrades are counted at most (past it, the refilled buckets go; if none has, all). */
  anonConnectMaxAddresses: z.coerce.number().int().min(100).default(10_000),
  /**
   * Agent sockets accepted and not yet welcomed (handshakes in progress) at most; above, an upgrade
   * answers 503 + Retry-After (spread wider the more are shed) before anything is spent on it.
   */
  agentConnectsPendingMax: z.coerce.number().int().min(1).default(500),
  /**
   * The listening socket's accept queue (connections the kernel completed and the server has not
   * taken yet; the kernel caps it at net.core.somaxconn, and the server warns at start when that cap
   * is below the fleet it holds). Deep enough for the whole fleet, so a fleet reconnecting after a
   * restart waits in it instead of losing SYNs to TCP's 1, 3, 7, 15 s retransmits. Node takes one
   * connection from it per event-loop iteration (50–350 a second on a busy node), and an agent
   * waits up to 60 s there for its upgrade's answer; a node too starved to drain it within that
   * hands stale connections to its loop, and a shorter queue keeps the ones it takes fresh.
   */
  listenBacklog: z.coerce.number().int().min(1).default(65535),
  /**
   * While agents keep connecting (a reconnect storm), how long a connect waits for others to share
   * its database write (its connection row and ownership claim); an isolated connect never waits.
   */
  connectWriteGatherMs: z.coerce.number().int().min(0).max(1000).default(20),
  /** Connects written by one transaction at most (a full group is written at once). */
  connectWriteGroupMax: z.coerce.number().int().min(1).max(10_000).default(500),
  /** How often presence flushes last_seen_at (one statement per flush) and pushes metrics. */
  presenceFlushMs: z.coerce.number().int().min(50).default(2000),
  /**
   * How far the stored last_seen_at of an online agent may lag its last heartbeat (the memory, the
   * API and the console are exact; the row is written exactly when the agent goes offline). Spreads
   * a large fleet's presence writes: 0 writes every agent heard from at every flush.
   */
  presencePersistMs: z.coerce.number().int().min(0).default(30_000),
  /** Session cookie lifetime; open console sockets of the session are closed when it ends. */
  sessionTtlSec: z.coerce
    .number()
    .int()
    .min(5)
    .default(12 * 3600),
  /** Unrevoked, unexpired API tokens one user may hold (409 above). */
  maxTokensPerUser: z.coerce.number().int().min(1).default(50),
  /** JSON body limit for REST (script size has its own limit). */
  jsonBodyLimit: z.coerce
    .number()
    .int()
    .min(1024)
    .default(2 * 1024 * 1024),
  /** Largest script accepted by POST /api/tasks. */
  maxScriptBytes: z.coerce
    .number()
    .int()
    .min(1)
    .default(1024 * 1024),
  /** Agents whose last hour of CPU/memory/disk/load the server keeps in memory (one averaged point a minute, ~1 KB each). */
  metricsHistoryAgents: z.coerce.number().int().min(0).default(10_000),
  /** One history point per this many ms (60 points kept: the default is the last hour). */
  metricsHistoryStepMs: z.coerce.number().int().min(1000).default(60_000),
  /** The dashboard lists an online agent under "high disk" from this percentage of its disk used. */
  dashboardDiskPercent: z.coerce.number().min(1).max(100).default(90),
  /** Hosts the dashboard lists per kind of attention (offline, high disk, failed runs); the counts are of all. */
  dashboardAttentionMax: z.coerce.number().int().min(1).max(1000).default(20),
  /** Most targets one task may have. */
  maxTargetsPerTask: z.coerce.number().int().min(1).default(50_000),
  /** Executions one agent may run at once; more wait as pending. */
  maxExecutionsPerAgent: z.coerce.number().int().min(1).default(8),
  /** Stored output per execution before it is marked truncated. */
  maxOutputBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(16 * 1024 * 1024),
  /** Time an execution waits for an agent that went away (or, after a server restart, has not come back): then `lost` if it ran, `skipped` if it had not started. */
  reconcileTimeoutSec: z.coerce.number().int().min(1).default(300),
  /** Cluster: active tasks of a dead node taken over per transaction (the new owner reads and restores them a batch at a time). */
  takeoverBatchTasks: z.coerce.number().int().min(1).max(10_000).default(500),
  /** Terminal: shell kept alive after the console goes away, and scrollback kept for reattach. */
  terminalDetachTimeoutSec: z.coerce.number().int().min(1).default(300),
  terminalScrollbackBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(256 * 1024),
  terminalRecording: z
    .enum(['0', '1', 'true', 'false'])
    .default('1')
    .transform((v) => v === '1' || v === 'true'),
  terminalRecordingMaxBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(64 * 1024 * 1024),
  /** Recording: above this many bytes queued for the disk the recording stops (truncated) rather than grow memory. */
  terminalRecordingMaxQueuedBytes: z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .default(8 * 1024 * 1024),
  /** A watcher this many bytes behind the session's output is detached: watchers never slow the operator down. */
  terminalWatchMaxLagBytes: z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .default(4 * 1024 * 1024),
  /** Time an updating agent has to come back with the new version. */
  updateTimeoutSec: z.coerce.number().int().min(1).default(120),
  /**
   * Public half (base64 of the 32 raw bytes, as `muster keygen` prints it) of the key that signs
   * agent packages; only put in the enrollment install command. The signing key never is here.
   */
  updatePublicKey: z
    .string()
    .regex(/^[A-Za-z0-9+/]{43}=$/, 'MUSTER_UPDATE_PUBLIC_KEY must be the base64 of a 32-byte ed25519 public key')
    .optional(),
  /** Largest agent package accepted by POST /api/artifacts. */
  maxArtifactBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(512 * 1024 * 1024),
  /** Largest managed file revision accepted (uploads are streamed to disk; 413 above). */
  fileMaxBytes: z.coerce
    .number()
    .int()
    .min(1)
    .default(100 * 1024 * 1024),
  /** File distribution: payload bytes per FILE_DATA frame, unacknowledged bytes per transfer, and for all transfers together. */
  fileChunkBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .max(4 * 1024 * 1024)
    .default(256 * 1024),
  fileWindowBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(1024 * 1024),
  fileInflightBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(8 * 1024 * 1024),
  /** Content chunks kept in memory for the transfers that need them next (one read serves every host). */
  fileCacheBytes: z.coerce
    .number()
    .int()
    .min(0)
    .default(16 * 1024 * 1024),
  /** A distribution target with no progress for this long (agent offline, transfer stalled) fails. */
  fileApplyTimeoutSec: z.coerce.number().int().min(1).default(300),
  /** Failed logins per username+address per minute before 429. */
  loginRateLimit: z.coerce.number().int().min(1).default(10),
  /** Username+address pairs whose failed logins are counted at most (the least recently tried is forgotten first). */
  loginRateMaxKeys: z.coerce.number().int().min(100).default(10_000),
  /** How often the schedule engine looks for due schedules. */
  scheduleTickMs: z.coerce.number().int().min(50).max(60_000).default(1000),
  /** A schedule fire later than this (server down, overloaded) counts as missed: skipped or run once, as the schedule says. */
  scheduleMisfireGraceSec: z.coerce.number().int().min(1).default(60),
  /** Shortest `intervalSec` a schedule may have. */
  scheduleMinIntervalSec: z.coerce.number().int().min(1).default(10),
  /** Most fires one answer of GET /api/schedules/calendar lists (it says `truncated` beyond). */
  scheduleCalendarMaxFires: z.coerce.number().int().min(1).max(100_000).default(1000),
  /** Bounds of live agent configuration (/api/agent-config): a rule outside them is refused with 400. */
  agentHeartbeatMinSec: z.coerce.number().int().min(1).default(1),
  agentHeartbeatMaxSec: z.coerce.number().int().min(1).default(300),
  agentTerminalIdleMinSec: z.coerce.number().int().min(1).default(10),
  agentTerminalIdleMaxSec: z.coerce
    .number()
    .int()
    .min(1)
    .default(7 * 86_400),
  agentExecBufferMinBytes: z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .default(64 * 1024),
  agentExecBufferMaxBytes: z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .default(256 * 1024 * 1024),
  /** Control (JSON) messages per second one agent socket may send on average, and its burst; above: the socket is closed. */
  agentMessageRate: z.coerce.number().int().min(1).default(200),
  agentMessageBurst: z.coerce.number().int().min(1).default(1000),
  /** The same for one console socket. */
  consoleMessageRate: z.coerce.number().int().min(1).default(50),
  consoleMessageBurst: z.coerce.number().int().min(1).default(500),
  /**
   * How often each console socket re-reads its session/token row (one query per socket per
   * interval): a change no event reached this process with (reset-password from the command line,
   * an edit on another node without NATS) ends the socket within this time.
   */
  socketRecheckSec: z.coerce.number().int().min(1).default(30),
  /** Refused actions repeated by one actor (same action and target) are audited as one row per window, with a count. */
  auditRefusalWindowSec: z.coerce.number().int().min(1).default(60),
  /** Policy changes one agent reports that are audited at once per window; more fold into one row. */
  auditPolicyBurst: z.coerce.number().int().min(1).default(5),
  /** Open terminal sessions (live or detached) per user, and on this server node. */
  maxTerminalsPerUser: z.coerce.number().int().min(1).default(20),
  maxTerminalsPerServer: z.coerce.number().int().min(1).default(500),
  /** Most terminals one broadcast (type once, every pane receives it) opens together. */
  broadcastMaxPanes: z.coerce.number().int().min(1).max(1000).default(16),
  /** Largest file a terminal upload or download moves (drag and drop into a shell's directory, download from it). */
  terminalTransferMaxBytes: z.coerce
    .number()
    .int()
    .min(1)
    .default(100 * 1024 * 1024),
  /** Longest selector accepted (characters); longer ones are a 400 naming the position. */
  selectorMaxLength: z.coerce.number().int().min(16).default(16_384),
  /** Fleet views (the console's agents table) one console socket may hold at once. */
  fleetViewsPerConsole: z.coerce.number().int().min(1).max(64).default(4),
  /** How often changed fleet views send their deltas to consoles (ms). */
  fleetViewTickMs: z.coerce.number().int().min(10).max(5000).default(50),
  /** Fleet views sorted by cpu, memory or last seen re-sort at most this often (ms). */
  fleetViewResortMs: z.coerce.number().int().min(100).default(2000),
  /**
   * Bench only, off by default: every agent known from the database that has no socket is shown
   * online with simulated heartbeats (in memory, nothing written), and this many per second flip
   * offline/online. bench/console.mjs uses it for a 100,000-agent fleet one process cannot hold
   * sockets for. Never set it on a real server.
   */
  benchSimulatedPresence: z.coerce.number().int().min(0).optional(),
  /** Deepest nesting of parentheses and `not` in a selector. */
  selectorMaxDepth: z.coerce.number().int().min(1).max(1000).default(32),
  /** Most terms (comparisons, name lists, `in` tests) in one selector. */
  selectorMaxTerms: z.coerce.number().int().min(1).default(256),
  /**
   * Which peers may set X-Forwarded-For/-Proto (the client address in audit and connection
   * history): off (default), a comma-separated list of addresses/CIDRs or express's names
   * (loopback, linklocal, uniquelocal), a hop count, or true (every peer: only behind a proxy
   * that strips the header).
   */
  trustProxy: z
    .string()
    .default('off')
    .transform((v, ctx): boolean | number | string[] => {
      const t = v.trim().toLowerCase();
      if (t === 'off' || t === 'false' || t === '0' || t === '') return false;
      if (t === 'true' || t === 'on') return true;
      if (/^\d+$/.test(t)) return Number(t);
      const list = t
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean);
      const bad = list.find((x) => !/^(loopback|linklocal|uniquelocal|[0-9a-f.:]+(\/\d{1,3})?)$/.test(x));
      if (bad) ctx.addIssue({ code: 'custom', message: `not an address, CIDR or express name: ${bad}` });
      return list;
    }),
  /** MySQL/MariaDB: time to open a connection (a partitioned database answers nothing). */
  dbConnectTimeoutMs: z.coerce.number().int().min(100).default(5000),
  /** MySQL/MariaDB: time a query may wait for a pooled connection (all busy, or the database unreachable) before it fails. */
  dbAcquireTimeoutMs: z.coerce.number().int().min(100).default(10_000),
  /** MySQL/MariaDB: longest a statement may run after the migrations; its connection is then discarded. */
  dbQueryTimeoutMs: z.coerce.number().int().min(100).default(15_000),
  /** /readyz answers 503 when the database has not answered its probe within this time. */
  readyTimeoutMs: z.coerce.number().int().min(50).default(800),
  /** Failed batched writes (execution output and state, rollouts, distributions) are retried after this delay, doubling up to the cap. */
  dbRetryInitialMs: z.coerce.number().int().min(10).default(250),
  dbRetryMaxMs: z.coerce.number().int().min(10).default(5000),
  /**
   * MySQL/MariaDB: a transaction aborted by a lock conflict (deadlock, lock wait timeout; several
   * nodes writing the same agents) runs again up to this many times, after a random pause below
   * MUSTER_DB_DEADLOCK_BACKOFF_MS doubling per attempt.
   */
  dbDeadlockRetries: z.coerce.number().int().min(0).default(5),
  dbDeadlockBackoffMs: z.coerce.number().int().min(1).default(20),
  /**
   * Free space kept on the data dir's filesystem for the database: terminal recordings stop (and
   * are marked truncated) rather than write into it.
   */
  diskReserveBytes: z.coerce
    .number()
    .int()
    .min(0)
    .default(128 * 1024 * 1024),
});

export type Config = Readonly<z.infer<typeof Schema> & { dataDir: string }>;

/** True when browsers reach the console over https (directly or through a TLS proxy): cookies get `Secure`. */
export function servedOverHttps(c: Pick<Config, 'tlsCert' | 'publicUrl'>): boolean {
  return Boolean(c.tlsCert) || Boolean(c.publicUrl?.toLowerCase().startsWith('https:'));
}

/** Environment variable name for each config key (the public contract in DESIGN.md plus tunables). */
const ENV: Record<keyof z.infer<typeof Schema>, string> = {
  port: 'MUSTER_PORT',
  host: 'MUSTER_HOST',
  dataDir: 'MUSTER_DATA_DIR',
  dbUrl: 'MUSTER_DB_URL',
  adminPassword: 'MUSTER_ADMIN_PASSWORD',
  enrollToken: 'MUSTER_ENROLL_TOKEN',
  localAgent: 'MUSTER_LOCAL_AGENT',
  natsUrl: 'MUSTER_NATS_URL',
  cluster: 'MUSTER_CLUSTER',
  clusterLeaseTtlMs: 'MUSTER_CLUSTER_LEASE_TTL_MS',
  clusterMaxRelayedExecutions: 'MUSTER_CLUSTER_MAX_RELAYED_EXECUTIONS',
  clusterMaxAgentRoutes: 'MUSTER_CLUSTER_MAX_AGENT_ROUTES',
  clusterMaxWatchedTasks: 'MUSTER_CLUSTER_MAX_WATCHED_TASKS',
  tlsCert: 'MUSTER_TLS_CERT',
  tlsKey: 'MUSTER_TLS_KEY',
  publicUrl: 'MUSTER_PUBLIC_URL',
  nodeUrl: 'MUSTER_NODE_URL',
  logLevel: 'MUSTER_LOG_LEVEL',
  nodeId: 'MUSTER_NODE_ID',
  heartbeatIntervalMs: 'MUSTER_HEARTBEAT_INTERVAL_MS',
  agentPingIntervalMs: 'MUSTER_AGENT_PING_INTERVAL_MS',
  agentPingRate: 'MUSTER_AGENT_PING_RATE',
  notifyMaxAttempts: 'MUSTER_NOTIFY_MAX_ATTEMPTS',
  notifyRetryBaseMs: 'MUSTER_NOTIFY_RETRY_BASE_MS',
  notifyTimeoutMs: 'MUSTER_NOTIFY_TIMEOUT_MS',
  notifySweepMs: 'MUSTER_NOTIFY_SWEEP_MS',
  notifyMaxPerMinute: 'MUSTER_NOTIFY_MAX_PER_MINUTE',
  helloTimeoutMs: 'MUSTER_HELLO_TIMEOUT_MS',
  agentMaxPayload: 'MUSTER_AGENT_MAX_PAYLOAD',
  consoleMaxPayload: 'MUSTER_CONSOLE_MAX_PAYLOAD',
  bulkWriteThreshold: 'MUSTER_BULK_WRITE_THRESHOLD',
  bulkWindow: 'MUSTER_BULK_WINDOW',
  consoleSoftBufferBytes: 'MUSTER_CONSOLE_SOFT_BUFFER_BYTES',
  consoleHardBufferBytes: 'MUSTER_CONSOLE_HARD_BUFFER_BYTES',
  execConsoleBufferBytes: 'MUSTER_EXEC_CONSOLE_BUFFER_BYTES',
  outputFlushMs: 'MUSTER_OUTPUT_FLUSH_MS',
  execProgressWriteMs: 'MUSTER_EXEC_PROGRESS_WRITE_MS',
  outputBatchUpdates: 'MUSTER_OUTPUT_BATCH_UPDATES',
  execWriterThread: 'MUSTER_EXEC_WRITER_THREAD',
  outputBatchBytes: 'MUSTER_OUTPUT_BATCH_BYTES',
  outputMaxFlushBytes: 'MUSTER_OUTPUT_MAX_FLUSH_BYTES',
  outputHighWaterBytes: 'MUSTER_OUTPUT_HIGH_WATER_BYTES',
  maxInvalidMessages: 'MUSTER_MAX_INVALID_MESSAGES',
  agentConnectRate: 'MUSTER_AGENT_CONNECT_RATE',
  anonConnectRate: 'MUSTER_ANON_CONNECT_RATE',
  anonConnectRatePerAddress: 'MUSTER_ANON_CONNECT_RATE_PER_ADDRESS',
  anonConnectMaxAddresses: 'MUSTER_ANON_CONNECT_MAX_ADDRESSES',
  agentConnectsPendingMax: 'MUSTER_AGENT_CONNECTS_PENDING_MAX',
  listenBacklog: 'MUSTER_LISTEN_BACKLOG',
  connectWriteGatherMs: 'MUSTER_CONNECT_WRITE_GATHER_MS',
  connectWriteGroupMax: 'MUSTER_CONNECT_WRITE_GROUP_MAX',
  presenceFlushMs: 'MUSTER_PRESENCE_FLUSH_MS',
  presencePersistMs: 'MUSTER_PRESENCE_PERSIST_MS',
  sessionTtlSec: 'MUSTER_SESSION_TTL_SEC',
  jsonBodyLimit: 'MUSTER_JSON_BODY_LIMIT',
  maxScriptBytes: 'MUSTER_MAX_SCRIPT_BYTES',
  maxTargetsPerTask: 'MUSTER_MAX_TARGETS_PER_TASK',
  metricsHistoryAgents: 'MUSTER_METRICS_HISTORY_AGENTS',
  metricsHistoryStepMs: 'MUSTER_METRICS_HISTORY_STEP_MS',
  maxExecutionsPerAgent: 'MUSTER_MAX_EXECUTIONS_PER_AGENT',
  maxOutputBytes: 'MUSTER_MAX_OUTPUT_BYTES',
  reconcileTimeoutSec: 'MUSTER_RECONCILE_TIMEOUT_SEC',
  takeoverBatchTasks: 'MUSTER_TAKEOVER_BATCH_TASKS',
  terminalDetachTimeoutSec: 'MUSTER_TERMINAL_DETACH_TIMEOUT_SEC',
  terminalScrollbackBytes: 'MUSTER_TERMINAL_SCROLLBACK_BYTES',
  terminalRecording: 'MUSTER_TERMINAL_RECORDING',
  terminalRecordingMaxBytes: 'MUSTER_TERMINAL_RECORDING_MAX_BYTES',
  terminalRecordingMaxQueuedBytes: 'MUSTER_TERMINAL_RECORDING_MAX_QUEUED_BYTES',
  terminalWatchMaxLagBytes: 'MUSTER_TERMINAL_WATCH_MAX_LAG_BYTES',
  updateTimeoutSec: 'MUSTER_UPDATE_TIMEOUT_SEC',
  maxArtifactBytes: 'MUSTER_MAX_ARTIFACT_BYTES',
  fileMaxBytes: 'MUSTER_FILE_MAX_BYTES',
  fileChunkBytes: 'MUSTER_FILE_CHUNK_BYTES',
  fileWindowBytes: 'MUSTER_FILE_WINDOW_BYTES',
  fileInflightBytes: 'MUSTER_FILE_INFLIGHT_BYTES',
  fileCacheBytes: 'MUSTER_FILE_CACHE_BYTES',
  fileApplyTimeoutSec: 'MUSTER_FILE_APPLY_TIMEOUT_SEC',
  updatePublicKey: 'MUSTER_UPDATE_PUBLIC_KEY',
  loginRateLimit: 'MUSTER_LOGIN_RATE_LIMIT',
  loginRateMaxKeys: 'MUSTER_LOGIN_RATE_MAX_KEYS',
  dbConnectTimeoutMs: 'MUSTER_DB_CONNECT_TIMEOUT_MS',
  dbAcquireTimeoutMs: 'MUSTER_DB_ACQUIRE_TIMEOUT_MS',
  dbQueryTimeoutMs: 'MUSTER_DB_QUERY_TIMEOUT_MS',
  readyTimeoutMs: 'MUSTER_READY_TIMEOUT_MS',
  dbRetryInitialMs: 'MUSTER_DB_RETRY_INITIAL_MS',
  dbRetryMaxMs: 'MUSTER_DB_RETRY_MAX_MS',
  dbDeadlockRetries: 'MUSTER_DB_DEADLOCK_RETRIES',
  dbDeadlockBackoffMs: 'MUSTER_DB_DEADLOCK_BACKOFF_MS',
  diskReserveBytes: 'MUSTER_DISK_RESERVE_BYTES',
  scheduleTickMs: 'MUSTER_SCHEDULE_TICK_MS',
  scheduleMisfireGraceSec: 'MUSTER_SCHEDULE_MISFIRE_GRACE_SEC',
  scheduleMinIntervalSec: 'MUSTER_SCHEDULE_MIN_INTERVAL_SEC',
  scheduleCalendarMaxFires: 'MUSTER_SCHEDULE_CALENDAR_MAX_FIRES',
  agentMessageRate: 'MUSTER_AGENT_MESSAGE_RATE',
  agentMessageBurst: 'MUSTER_AGENT_MESSAGE_BURST',
  agentHeartbeatMinSec: 'MUSTER_AGENT_HEARTBEAT_MIN_SEC',
  agentHeartbeatMaxSec: 'MUSTER_AGENT_HEARTBEAT_MAX_SEC',
  agentTerminalIdleMinSec: 'MUSTER_AGENT_TERMINAL_IDLE_MIN_SEC',
  agentTerminalIdleMaxSec: 'MUSTER_AGENT_TERMINAL_IDLE_MAX_SEC',
  agentExecBufferMinBytes: 'MUSTER_AGENT_EXEC_BUFFER_MIN_BYTES',
  agentExecBufferMaxBytes: 'MUSTER_AGENT_EXEC_BUFFER_MAX_BYTES',
  consoleMessageRate: 'MUSTER_CONSOLE_MESSAGE_RATE',
  consoleMessageBurst: 'MUSTER_CONSOLE_MESSAGE_BURST',
  socketRecheckSec: 'MUSTER_SOCKET_RECHECK_SEC',
  auditRefusalWindowSec: 'MUSTER_AUDIT_REFUSAL_WINDOW_SEC',
  auditPolicyBurst: 'MUSTER_AUDIT_POLICY_BURST',
  maxTerminalsPerUser: 'MUSTER_MAX_TERMINALS_PER_USER',
  maxTerminalsPerServer: 'MUSTER_MAX_TERMINALS_PER_SERVER',
  broadcastMaxPanes: 'MUSTER_BROADCAST_MAX_PANES',
  terminalTransferMaxBytes: 'MUSTER_TERMINAL_TRANSFER_MAX_BYTES',
  fleetViewsPerConsole: 'MUSTER_FLEET_VIEWS_PER_CONSOLE',
  fleetViewTickMs: 'MUSTER_FLEET_VIEW_TICK_MS',
  fleetViewResortMs: 'MUSTER_FLEET_VIEW_RESORT_MS',
  benchSimulatedPresence: 'MUSTER_BENCH_SIMULATED_PRESENCE',
  selectorMaxLength: 'MUSTER_SELECTOR_MAX_LENGTH',
  selectorMaxDepth: 'MUSTER_SELECTOR_MAX_DEPTH',
  selectorMaxTerms: 'MUSTER_SELECTOR_MAX_TERMS',
  trustProxy: 'MUSTER_TRUST_PROXY',
  maxTokensPerUser: 'MUSTER_MAX_TOKENS_PER_USER',
  dashboardDiskPercent: 'MUSTER_DASHBOARD_DISK_PERCENT',
  dashboardAttentionMax: 'MUSTER_DASHBOARD_ATTENTION_MAX',
};

/**
 * MUSTER_* variables that are not the server's and not mistakes, so never reported as unknown:
 * the agent's (MUSTER_AGENT_*; the local agent is given them), tests' and benchmarks', the
 * parameters and facts Muster sets for the scripts it runs, the CLI's, and the build's.
 */
const NOT_THE_SERVERS_PREFIXES = ['MUSTER_AGENT_', 'MUSTER_TEST_', 'MUSTER_BENCH_', 'MUSTER_PARAM_'];
const NOT_THE_SERVERS = new Set([
  // Set for scripts: agent/executor/run.ts, server/files/index.ts (a distribution's apply command).
  'MUSTER_EXECUTION_ID',
  'MUSTER_TASK_ID',
  'MUSTER_FILE_PATH',
  // The CLI: cli/client.ts, cli/commands/login.ts.
  'MUSTER_SERVER',
  'MUSTER_TOKEN',
  'MUSTER_PASSWORD',
  'MUSTER_CLI_CONFIG',
  // The build and the test tooling: scripts/build.mjs, deployment/build-agent.sh, test/helpers, test/e2e, bench/sim.
  'MUSTER_SKIP_WEB_BUILD',
  'MUSTER_NODE_BIN',
  'MUSTER_PACKAGE_GZIP_LEVEL',
  'MUSTER_UPDATE_SCREENSHOTS',
  'MUSTER_CHROMIUM',
  'MUSTER_SIM_CONFIG',
]);
const SERVER_VARIABLES = new Set<string>(Object.values(ENV));

/**
 * The MUSTER_* variables of `env` the server does not read (sorted), each with the server variable
 * it most likely misspells, if one is close. Known names are the table loadConfig parses with.
 */
export function unknownVariables(env: NodeJS.ProcessEnv): { name: string; didYouMean?: string }[] {
  return Object.keys(env)
    .filter((k) => k.startsWith('MUSTER_') && !SERVER_VARIABLES.has(k) && !NOT_THE_SERVERS.has(k))
    .filter((k) => !NOT_THE_SERVERS_PREFIXES.some((p) => k.startsWith(p)))
    .sort()
    .map((name) => {
      const near = closest(name, SERVER_VARIABLES);
      return near ? { name, didYouMean: near } : { name };
    });
}

/** The known name within an edit distance of 3 of `name` (the nearest; none when two tie). */
function closest(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = 4;
  let tie = false;
  for (const k of known) {
    if (Math.abs(k.length - name.length) >= bestD) continue;
    const d = editDistance(name, k);
    if (d < bestD) [best, bestD, tie] = [k, d, false];
    else if (d === bestD) tie = true;
  }
  return tie ? undefined : best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** Raised for invalid configuration; main prints it and exits non-zero before listening. */
export class ConfigError extends Error {}

/** Reads config from the environment once. Nothing else in the server reads process.env. */
export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const raw: Record<string, string> = {};
  for (const [key, name] of Object.entries(ENV)) {
    const v = env[name];
    if (v !== undefined && v !== '') raw[key] = v;
  }
  const parsed = Schema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? '') as keyof typeof ENV;
      return `  ${ENV[key] ?? key}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const c = parsed.data;
  if (c.dbUrl && !/^(mysql|mariadb|sqlite):/.test(c.dbUrl)) {
    throw new ConfigError('invalid configuration:\n  MUSTER_DB_URL: must start with mysql://, mariadb:// or sqlite:');
  }
  if (c.natsUrl && !/^(mysql|mariadb):/.test(c.dbUrl ?? '')) {
    // Every node must see the same agents, tasks and leases' effects: one SQLite file per node cannot.
    throw new ConfigError(
      'invalid configuration:\n  MUSTER_NATS_URL: a cluster needs a shared MySQL/MariaDB database; set MUSTER_DB_URL=mysql://… (SQLite is one node only)',
    );
  }
  if (Boolean(c.tlsCert) !== Boolean(c.tlsKey)) {
    throw new ConfigError('invalid configuration:\n  MUSTER_TLS_CERT and MUSTER_TLS_KEY must be set together');
  }
  return Object.freeze({ ...c, dataDir: path.resolve(c.dataDir) });
}

/** The selector bounds of a config. */
export function selectorLimits(c: Config): { maxLength: number; maxDepth: number; maxTerms: number } {
  return { maxLength: c.selectorMaxLength, maxDepth: c.selectorMaxDepth, maxTerms: c.selectorMaxTerms };
}

/** A random URL-safe secret of `bytes` bytes. */
export function randomSecret(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}
