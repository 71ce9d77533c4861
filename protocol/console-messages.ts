import { z } from 'zod';
import type { Metrics } from './common.js';
import { id } from './common.js';
import type { AgentView, ExecutionView, TaskView, UserView } from './rest.js';

/* ---------------- console → server (validated on receipt) ---------------- */

const dims = { cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) };
/**
 * `direct`: the console can follow a `term.elsewhere` (cluster): when the agent (or the session) is
 * held by another node that gave its address (MUSTER_NODE_URL), that answer comes instead, and the
 * console sends the same message on a socket of that node. Without it, or when that node gave no
 * address, this node relays the session (through NATS).
 */
const direct = { direct: z.boolean().optional() };
export const ConsoleTermOpen = z.object({ type: z.literal('term.open'), ref: z.string().max(64), agentId: id, ...dims, ...direct });
/** Attach to an existing session: `control` (the owner, after a reload) or `watch` (admin, read-only). */
export const ConsoleTermAttach = z.object({
  type: z.literal('term.attach'),
  ref: z.string().max(64),
  sessionId: id,
  mode: z.enum(['control', 'watch']),
  ...direct,
});
export const ConsoleTermDetach = z.object({ type: z.literal('term.detach'), sessionId: id });
export const ConsoleTermResize = z.object({ type: z.literal('term.resize'), sessionId: id, ...dims });
export const ConsoleTermClose = z.object({ type: z.literal('term.close'), sessionId: id });
/** The console wrote `bytes` more output bytes (xterm.js write callback). */
export const ConsoleTermAck = z.object({ type: z.literal('term.ack'), sessionId: id, bytes: z.number().int().nonnegative() });
/**
 * Broadcast typing: opens one terminal per agent (each answered like a `term.open` whose ref is
 * `${ref}/${index}`) grouped under a broadcast id. TERM_DATA frames the console sends with the
 * broadcast id instead of a session id reach every session of the group that is joined.
 * Answered `term.broadcast.opened` (same ref), or `error` (same ref) when refused as a whole.
 * The server's limit (MUSTER_BROADCAST_MAX_PANES) caps `agentIds`; the schema only bounds the array.
 */
export const ConsoleTermBroadcastOpen = z.object({
  type: z.literal('term.broadcast.open'),
  ref: z.string().max(48),
  agentIds: z.array(id).min(1).max(1000),
  ...dims,
});
/** A pane leaves (`joined: false`) or rejoins the broadcast; its session stays open either way. */
export const ConsoleTermBroadcastMember = z.object({ type: z.literal('term.broadcast.member'), broadcastId: id, sessionId: id, joined: z.boolean() });
/** Ends the broadcast group (its sessions stay open as ordinary terminals). */
export const ConsoleTermBroadcastClose = z.object({ type: z.literal('term.broadcast.close'), broadcastId: id });
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
  ConsoleTermOpen,
  ConsoleTermAttach,
  ConsoleTermDetach,
  ConsoleTermResize,
  ConsoleTermClose,
  ConsoleTermAck,
  ConsoleTermBroadcastOpen,
  ConsoleTermBroadcastMember,
  ConsoleTermBroadcastClose,
  ConsoleTaskSubscribe,
  ConsoleTaskUnsubscribe,
  ConsolePing,
  ConsoleFleetOpen,
  ConsoleFleetScroll,
  ConsoleFleetClose,
  ConsoleFleetFeed,
]);
export type ConsoleToServer = z.infer<typeof ConsoleToServer>;
export type ConsoleMessageType = ConsoleToServer['type'];
export type ConsoleMessage<T extends ConsoleMessageType> = Extract<ConsoleToServer, { type: T }>;

/* ---------------- REST / push resource shapes ---------------- */

export type Role = 'viewer' | 'operator' | 'admin';
/** REST resource shapes (also pushed to consoles) live in rest.ts. */

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
  /**
   * Answer to a `term.open` / `term.attach` with `direct` (same ref): the agent or session is held by
   * server node `node`, reachable at `url` (a path on this console's origin, or an absolute URL);
   * send the same message on a console socket of `${url}/ws/console`. Nothing was opened here.
   */
  | { type: 'term.elsewhere'; ref: string; node: string; url: string; agentId?: string; sessionId?: string }
  /** The session ended (or, for this console only, was taken over by another console of its owner). */
  | { type: 'term.closed'; sessionId: string; reason: string; exitCode?: number | null }
  /**
   * Answer to `term.broadcast.open`: the broadcast id and, per agent in the order asked, the
   * session allocated for it (null when that one was refused: its `error` carries `${ref}/${index}`).
   */
  | { type: 'term.broadcast.opened'; ref: string; broadcastId: string; sessionIds: (string | null)[]; maxPanes: number }
  /** Membership after a `term.broadcast.member` (or a session of the group ended). */
  | { type: 'term.broadcast.members'; broadcastId: string; joined: string[] }
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
