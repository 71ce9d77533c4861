import type { AuditLog } from './auth/audit.js';
import type { ApiRouter } from './http/api-router.js';
import type { AuthService } from './auth/auth-service.js';
import type { EnrollmentTokens } from './auth/enrollment.js';
import type { Bus } from './bus/bus.js';
import type { Leases } from './cluster/lease.js';
import type { Config } from './config/config.js';
import type { Db, Dialect } from './db/db.js';
import type { DiskGuard } from './db/disk-guard.js';
import type { Fleet } from './fleet/fleet.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
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
  fleet: Fleet;
  audit: AuditLog;
  auth: AuthService;
  /** Enrolment tokens (and MUSTER_ENROLL_TOKEN when set). */
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
  routes?: ApiRouter;
  start?(): Promise<void>;
  stop?(): Promise<void>;
}
export type { AgentBinaryHandlers, ConsoleBinaryHandlers };
