import { z } from 'zod';
import type { ExecutionState, Labels, Metrics, UpdateState } from './common.js';
import { id } from './common.js';
import type { HostPolicy } from './policy.js';

/* ---------------- console → server (validated on receipt) ---------------- */

const dims = { cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) };
export const ConsoleTermOpen = z.object({ type: z.literal('term.open'), ref: z.string().max(64), agentId: id, ...dims });
/** Attach to an existing session: `control` (the owner, after a reload) or `watch` (admin, read-only). */
export const ConsoleTermAttach = z.object({
  type: z.literal('term.attach'),
  ref: z.string().max(64),
  sessionId: id,
  mode: z.enum(['control', 'watch']),
});
export const ConsoleTermDetach = z.object({ type: z.literal('term.detach'), sessionId: id });
export const ConsoleTermResize = z.object({ type: z.literal('term.resize'), sessionId: id, ...dims });
export const ConsoleTermClose = z.object({ type: z.literal('term.close'), sessionId: id });
/** The console wrote `bytes` more output bytes (xterm.js write callback). */
export const ConsoleTermAck = z.object({ type: z.literal('term.ack'), sessionId: id, bytes: z.number().int().nonnegative() });
export const ConsoleTaskSubscribe = z.object({ type: z.literal('task.subscribe'), taskId: id, output: z.boolean().default(true) });
export const ConsoleTaskUnsubscribe = z.object({ type: z.literal('task.unsubscribe'), taskId: id });
export const ConsolePing = z.object({ type: z.literal('ping'), ref: z.string().max(64).optional() });

/** Columns a fleet view can be sorted by (server/fleet/order.ts defines the order of each). */
export const FLEET_SORT_KEYS = ['name', 'status', 'hostname', 'version', 'os', 'cpu', 'mem', 'lastSeen'] as const;
export type FleetSortKey = (typeof FLEET_SORT_KEYS)[number];
/** Most rows one fleet view window may hold (a screenful plus overscan is a few dozen). */
export const FLEET_WINDOW_MAX = 500;
const viewId = z.string().min(1).max(32);
const fleetWindow = { offset: z.number().int().min(0).max(10_000_000), limit: z.number().int().min(1).max(FLEET_WINDOW_MAX) };
/**
 * Opens (or replaces) a server-side view of the fleet: filtered by `selector` (the selector
 * language; empty = every agent) and `status`, sorted by `sort`, of which the console sees the
 * window [offset, offset + limit). Answered with `fleet.window` (`reset: true`, same `ref`), or
 * `error selector_syntax` with the same `ref`.
 */
export const ConsoleFleetOpen = z.object({
  type: z.literal('fleet.open'),
  ref: z.string().max(64),
  view: viewId,
  selector: z.string().max(65_536).default(''),
  status: z.enum(['all', 'online', 'offline']).default('all'),
  sort: z.enum(FLEET_SORT_KEYS).default('name'),
  desc: z.boolean().default(false),
  ...fleetWindow,
});
/** Moves a view's window (scrolling). Answered with `fleet.window` carrying the rows new to the window. */
export const ConsoleFleetScroll = z.object({ type: z.literal('fleet.scroll'), view: viewId, ...fleetWindow });
export const ConsoleFleetClose = z.object({ type: z.literal('fleet.close'), view: viewId });
/**
 * Which fleet-wide pushes this console wants: `metrics: false` stops `agent.metrics` (every
 * heartbeat of the fleet, batched), which a console that follows views does not need.
 */
export const ConsoleFleetFeed = z.object({ type: z.literal('fleet.feed'), metrics: z.boolean() });

export const ConsoleToServer = z.discriminatedUnion('type', [
  ConsoleTermOpen, ConsoleTermAttach, ConsoleTermDetach, ConsoleTermResize, ConsoleTermClose, ConsoleTermAck,
  ConsoleTaskSubscribe, ConsoleTaskUnsubscribe, ConsolePing, ConsoleFleetOpen, ConsoleFleetScroll, ConsoleFleetClose, ConsoleFleetFeed,
]);
export type ConsoleToServer = z.infer<typeof ConsoleToServer>;
export type ConsoleMessageType = ConsoleToServer['type'];
export type ConsoleMessage<T extends ConsoleMessageType> = Extract<ConsoleToServer, { type: T }>;

/* ---------------- REST / push resource shapes ---------------- */

export type Role = 'viewer' | 'operator' | 'admin';
export interface UserView { id: number; username: string; role: Role }

export interface AgentView {
  id: string;
  name: string;
  hostname: string;
  ips: string[];
  externalIp: string | null;
  platform: string;
  arch: string;
  os: string;
  version: string;
  cpus: number;
  memoryBytes: number;
  labels: Labels;
  groups: string[];
  status: 'online' | 'offline';
  connectedAt: string | null;
  lastSeenAt: string | null;
  metrics: Metrics | null;
  revoked: boolean;
  /** The host's policy as last reported by the agent; null when it never reported one (older agent). */
  policy: HostPolicy | null;
}

export interface ExecutionView {
  id: string;
  taskId: string;
  agentId: string;
  agentName: string;
  status: ExecutionState;
  exitCode: number | null;
  signal: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  truncated: boolean;
  reason: string | null;
  outputBytes: number;
  /** How the agent contained the process tree: `cgroup2:<path>`, `cgroup1:<path>`, `systemd:<unit>` or `pgid`. */
  containment?: string | null;
  /** Set when a `lost` execution later took the result its agent reported (ISO time of that). */
  reconciledAt?: string | null;
}

export interface TaskView {
  id: string;
  /** Given at creation, else the script's first meaningful line (a library run: the script's name). */
  name: string;
  script: string;
  interpreter: string;
  args: string[];
  targets: unknown;
  createdBy: string;
  createdAt: string;
  status: 'running' | 'succeeded' | 'failed' | 'cancelled';
  counts: Partial<Record<ExecutionState, number>>;
  total: number;
}

export interface RolloutTargetView {
  agentId: string;
  agentName: string;
  wave: number;
  state: UpdateState;
  reason: string | null;
  fromVersion: string | null;
  updatedAt: string;
}

/** A terminal session as GET /api/terminals lists it (live sessions carry live byte counts). */
export interface TerminalSessionView {
  id: string;
  agentId: string;
  agentName: string | null;
  username: string;
  openedAt: string;
  closedAt: string | null;
  closeReason: string | null;
  exitCode: number | null;
  cols: number;
  rows: number;
  /** Input bytes (console → shell) and output bytes (shell → console). */
  bytesIn: number;
  bytesOut: number;
  status: 'open' | 'closed';
  /** A controlling console is attached right now (false for a detached live session). */
  attached: boolean;
  recording: boolean;
  recordingBytes: number;
  recordingTruncated: boolean;
}

/** An uploaded agent package (GET /api/artifacts). */
export interface ArtifactView {
  id: string;
  version: string;
  filename: string;
  arch: string | null;
  size: number;
  sha256: string;
  signature: string;
  createdBy: string;
  createdAt: string;
}

/** running → paused (past maxFailures, or by hand) → running …; ends succeeded | failed | cancelled. */
export type RolloutState = 'running' | 'paused' | 'cancelled' | 'succeeded' | 'failed';

export interface RolloutWaveView {
  index: number;
  /** Targets in this wave (skipped agents are not in any wave). */
  size: number;
  state: 'waiting' | 'running' | 'done';
  counts: Partial<Record<UpdateState, number>>;
}

/** A batch agent update (GET /api/rollouts, GET /api/rollouts/:id adds `targets`). */
export interface RolloutView {
  id: string;
  artifactId: string | null;
  version: string;
  /** Download URL when the rollout names one instead of an uploaded artifact. */
  url: string | null;
  size: number;
  sha256: string;
  selector: string;
  /** The waves as requested, e.g. [1, "10%", "50%", "100%"]. */
  waveSpec: (number | string)[];
  maxFailures: number;
  allowDowngrade: boolean;
  state: RolloutState;
  reason: string | null;
  /** Index of the wave being updated (or last updated). */
  currentWave: number;
  failures: number;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
  counts: Partial<Record<UpdateState, number>>;
  total: number;
  waves: RolloutWaveView[];
  targets?: RolloutTargetView[];
}

/* ---------------- server → console ---------------- */

export type ServerToConsole =
  | { type: 'ready'; user: UserView; serverTime: number }
  | { type: 'pong'; ref?: string }
  /** `position` and `expected` come with `selector_syntax` (0-based position in the selector). */
  | { type: 'error'; code: string; message: string; ref?: string; position?: number; expected?: string }
  | { type: 'agent.online'; agent: AgentView }
  | { type: 'agent.offline'; agentId: string; reason: string; at: string; name?: string }
  | { type: 'agent.changed'; agent: AgentView }
  | { type: 'agent.removed'; agentId: string }
  /** Latest metrics of many agents, batched (at most one message per flush interval). */
  | { type: 'agent.metrics'; items: { agentId: string; metrics: Metrics; lastSeenAt: string }[] }
  | { type: 'task.updated'; task: TaskView }
  | { type: 'execution.updated'; execution: ExecutionView }
  /** The console fell behind; output chunks [fromSeq, toSeq) of this stream were skipped. */
  | { type: 'exec.gap'; executionId: string; stream: 'stdout' | 'stderr'; fromSeq: number; toSeq: number }
  | { type: 'term.opened'; ref: string; sessionId: string; agentId: string; mode: 'control' | 'watch'; cols: number; rows: number }
  /** The session ended (or, for this console only, was taken over by another console of its owner). */
  | { type: 'term.closed'; sessionId: string; reason: string; exitCode?: number | null }
  | { type: 'rollout.updated'; rolloutId: string }
  /** A file distribution made progress (throttled; consoles refetch it). */
  | { type: 'distribution.updated'; distributionId: string; fileId: string }
  | FleetWindowMessage;

/**
 * The state of one fleet view as the console should show it. `reset` (the answer to `fleet.open`):
 * forget every row of this view held so far. Otherwise a delta: `ids` (the window's agent ids in
 * order) only when the window's membership or order changed; `rows` only for agents new to the
 * window or changed since the last message; counts every time (they are small).
 */
export interface FleetWindowMessage {
  type: 'fleet.window';
  view: string;
  ref?: string;
  /** Per view, increasing: a console drops a message older than one it has applied. */
  seq: number;
  reset?: boolean;
  /** Every agent this server knows (revoked included, as `GET /api/agents` lists them). */
  total: number;
  /** Agents matching the selector and the status filter (the scrollable length). */
  matching: number;
  /** Agents matching the selector, by status (before the status filter). */
  byStatus: { online: number; offline: number };
  offset: number;
  limit: number;
  ids?: string[];
  rows: AgentView[];
}
