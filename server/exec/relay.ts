import type { AgentMessage, Hello, ServerToAgent, Stream } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import type { Bus } from '../bus/bus.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { AgentChannel, Fleet } from '../fleet/fleet.js';
import type { Logger } from '../log.js';
import type { ConsoleFanout } from './fanout.js';
import type { Scheduler } from './scheduler.js';

/**
 * Batch execution across server nodes (issue 12). A task belongs to the node it was created on
 * (`tasks.owner_node`): that node's scheduler dispatches, applies windows, `maxFailures`, the
 * offline queue and reconcile, and its write batcher stores every row and output chunk once. An
 * execution whose agent holds its socket on another node (the "agent node") goes through these
 * node-addressed kinds (server/cluster/node-link.ts), each in order from one node to another:
 *
 *   exec.to-agent     owner → agent node: a message for the agent (exec.run, resume, cancel, ack);
 *                     the agent node remembers the owner of that execution (bounded)
 *   exec.undelivered  agent node → owner: the agent was not connected there (the owner waits for it)
 *   exec.from-agent   agent node → owner: the agent's reports (started, output, finished, rejected)
 *                     for an execution the agent node does not own
 *   exec.hello        agent node → every node: the agent (re)connected and what it still runs; each
 *                     owner reconciles the executions it holds (resume, redispatch, queued start)
 *   exec.pressure     owner → every node: its output writer is above / back below its high-water
 *                     mark; agent nodes stop / resume reading the sockets of agents that send it output
 *   exec.watch(-end)  console node → every node: a console follows / no longer follows a task here
 *   exec.live(-end)   owner → console nodes: live output chunks of a task they follow
 *   exec.cancel-task  any node → owner (request): cancel a task it runs
 *   exec.taken        new owner → every node: it took these tasks of a dead node over; a node
 *                     that still runs one (it was only cut off) forgets it, console nodes that
 *                     follow one register with the new owner (exec.watch)
 *
 * A non-owner never acknowledges, cancels or finishes an execution it does not own: reports it
 * cannot route are left to the agent, which names them again in its next hello.
 */
const TO_AGENT = 'exec.to-agent';
const UNDELIVERED = 'exec.undelivered';
const FROM_AGENT = 'exec.from-agent';
const HELLO = 'exec.hello';
const PRESSURE = 'exec.pressure';
const WATCH = 'exec.watch';
const WATCH_END = 'exec.watch-end';
const LIVE = 'exec.live';
const LIVE_END = 'exec.live-end';
const CANCEL_TASK = 'exec.cancel-task';
const TAKEN = 'exec.taken';

/**
 * The relay's tables are bounded, the oldest entry forgotten first (config: MUSTER_CLUSTER_MAX_*):
 * executions of other nodes' tasks this node relays for (the owner's next resume restores one),
 * agents whose node is remembered from their hello (past it, the presence registry answers), and
 * tasks of this node followed by consoles on other nodes.
 */
export interface RelayBounds {
  maxRelayedExecutions: number;
  maxAgentRoutes: number;
  maxWatchedTasks: number;
}
/** A cancel sent to the owner node waits this long for its answer (a database write and an audit row there). */
export const REMOTE_CANCEL_TIMEOUT_MS = 20_000;

type Report = AgentMessage<'exec.started' | 'exec.finished' | 'exec.rejected'>;
interface ToAgent {
  a: string;
  m: ServerToAgent;
}
interface FromAgent {
  a: string;
  /** A report, or an output chunk's [executionId, stream, seq] (its data is the binary part). */
  m?: Report;
  o?: [string, Stream, number];
}

/** What the relay hands to the owner's service (ExecService's agent side). */
export interface ReportTarget {
  started(agentId: string, m: AgentMessage<'exec.started'>): void;
  output(agentId: string, executionId: string, stream: Stream, seq: number, data: Uint8Array): void;
  finished(agentId: string, m: AgentMessage<'exec.finished'>): void;
  rejected(agentId: string, m: AgentMessage<'exec.rejected'>): void;
  cancel(taskId: string, actor: Actor): Promise<unknown>;
}

/** Bounded insertion-ordered map: the oldest entry goes when full. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) map.delete(map.keys().next().value as K);
}

export class ExecRelay {
  /** executionId → owner node, for executions of other nodes' tasks whose agent is connected here. */
  private readonly owners = new Map<string, string>();
  /** agentId → the node its last hello came from (fresher than presence right after a reconnect). */
  private readonly via = new Map<string, string>();
  /** taskId → other nodes with consoles following it. */
  private readonly watchers = new Map<string, Set<string>>();
  /** Owner nodes whose output writer is above its high-water mark. */
  private readonly pressured = new Set<string>();
  /** Agent sockets not read because the owner they send output to is pressured. */
  private readonly held = new Map<string, { ch: AgentChannel; owner: string }>();
  private readonly unsubs: (() => void)[] = [];
  private target: ReportTarget | null = null;

  constructor(
    private readonly d: {
      enabled: boolean;
      link: NodeLink;
      fleet: Pick<Fleet, 'isOnline' | 'send' | 'get' | 'touch'>;
      /** The node holding an agent's socket (presence), null when none is known. */
      agentNode(agentId: string): string | null;
      scheduler: Pick<Scheduler, 'holds' | 'agentReturned' | 'agentLeft' | 'release'>;
      fanout: Pick<ConsoleFanout, 'output' | 'ended' | 'subscribers'>;
      bus: Pick<Bus, 'subscribe'>;
      log: Logger;
      bounds: RelayBounds;
    },
  ) {}

  get nodeId(): string {
    return this.d.link.nodeId;
  }

  /* ---------------- the owner's view of the fleet (the scheduler's and service's `fleet`) ---------------- */

  /** The node holding the agent's socket (this one first), null when it is connected nowhere known. */
  nodeOf(agentId: string): string | null {
    if (this.d.fleet.isOnline(agentId)) return this.nodeId;
    if (!this.d.enabled) return null;
    return this.via.get(agentId) ?? this.d.agentNode(agentId);
  }

  /** Fleet for the scheduler: an agent online on any node is online, and messages reach it there. */
  readonly port: Pick<Fleet, 'isOnline' | 'send' | 'get'> = {
    isOnline: (id) => this.nodeOf(id) != null,
    get: (id) => this.d.fleet.get(id),
    send: (id, msg, json) => {
      const node = this.nodeOf(id);
      if (node == null) return false;
      if (node === this.nodeId) return this.d.fleet.send(id, msg, json);
      return this.d.link.send(node, TO_AGENT, { a: id, m: msg } satisfies ToAgent);
    },
  };

  /* ---------------- lifetime ---------------- */

  start(target: ReportTarget): void {
    this.target = target;
    if (!this.d.enabled) return;
    const { link, fleet, log } = this.d;
    const h = (kind: string, fn: (meta: never, data: Uint8Array, from: string) => unknown) =>
      this.unsubs.push(link.handle(kind, fn as (meta: unknown, data: Uint8Array, from: string) => unknown));

    // Agent node: deliver the owner's message, and remember whose execution it is.
    h(TO_AGENT, (t: ToAgent, _data, from) => {
      const m = t.m;
      if ('executionId' in m && typeof m.executionId === 'string') {
        if (m.type === 'exec.ack') this.owners.delete(m.executionId);
        else remember(this.owners, m.executionId, from, this.d.bounds.maxRelayedExecutions);
      }
      if (!fleet.send(t.a, m)) link.send(from, UNDELIVERED, { a: t.a });
    });
    // Owner: the agent is not where we thought; it counts as away until its next hello.
    h(UNDELIVERED, (u: { a: string }, _data, from) => {
      if (this.via.get(u.a) === from) this.via.delete(u.a);
      if (!fleet.isOnline(u.a)) this.d.scheduler.agentLeft(u.a);
    });
    // Owner: the agent's reports, relayed by its node.
    h(FROM_AGENT, (f: FromAgent, data, from) => {
      const t = this.target;
      if (!t || fleet.isOnline(f.a)) return; // connected here now: its reports come straight
      remember(this.via, f.a, from, this.d.bounds.maxAgentRoutes);
      if (f.o) return t.output(f.a, f.o[0], f.o[1], f.o[2], data);
      const m = f.m;
      if (m?.type === 'exec.started') t.started(f.a, m);
      else if (m?.type === 'exec.finished') t.finished(f.a, m);
      else if (m?.type === 'exec.rejected') t.rejected(f.a, m);
    });
    // Every node: an agent (re)connected elsewhere; reconcile the executions this node owns.
    h(HELLO, (x: { a: string; x: Hello['executions'] }, _data, from) => {
      if (fleet.isOnline(x.a)) return; // a newer socket here
      remember(this.via, x.a, from, this.d.bounds.maxAgentRoutes);
      const mine = x.x.filter((e) => this.d.scheduler.holds(x.a, e.executionId));
      // Unknown ones are the agent node's to settle (late results, or over): none is returned here.
      this.d.scheduler.agentReturned(x.a, { executions: mine });
    });
    h(PRESSURE, (p: { on: boolean }, _data, from) => {
      if (p.on) this.pressured.add(from);
      else {
        this.pressured.delete(from);
        for (const [agentId, x] of this.held) {
          if (x.owner !== from) continue;
          this.held.delete(agentId);
          x.ch.resume?.();
          fleet.touch(agentId, x.ch.linkId); // its heartbeats were not read while paused
        }
      }
    });
    h(WATCH, (w: { t: string }, _data, from) => {
      const s = this.watchers.get(w.t) ?? new Set<string>();
      s.add(from);
      remember(this.watchers, w.t, s, this.d.bounds.maxWatchedTasks);
    });
    h(WATCH_END, (w: { t: string }, _data, from) => {
      const s = this.watchers.get(w.t);
      s?.delete(from);
      if (s?.size === 0) this.watchers.delete(w.t);
    });
    h(LIVE, (l: { t: string; e: string; s: Stream; q: number }, data) => this.d.fanout.output(l.t, l.e, l.s, l.q, data));
    h(LIVE_END, (l: { t: string; e: string; n: number }) => this.d.fanout.ended(l.t, l.e, l.n));
    h(CANCEL_TASK, (c: { t: string; actor: Actor }) => this.target?.cancel(c.t, c.actor));
    h(TAKEN, (x: { from: string; t: string[] }, _data, to) => {
      let released = 0;
      for (const taskId of x.t) {
        if (this.d.scheduler.release(taskId)) released++;
        // Live output of a task followed here now comes from its new owner.
        if (this.d.fanout.subscribers(taskId) > 0) link.send(to, WATCH, { t: taskId });
      }
      if (released)
        log.warn({ tasks: released, from: x.from, to }, 'cluster: another node took over tasks this node was running (it was cut off); forgot them');
    });
    // An agent gone from its node: the owner's reconcile timer starts (as for a local disconnect).
    this.unsubs.push(
      this.d.bus.subscribe('agent.offline', (p) => {
        if (fleet.isOnline(p.agentId)) return;
        this.via.delete(p.agentId);
        this.d.scheduler.agentLeft(p.agentId);
      }),
    );
    log.debug('cluster: batch execution relay on');
  }

  stop(): void {
    for (const u of this.unsubs.splice(0)) u();
    for (const x of this.held.values()) x.ch.resume?.();
    this.held.clear();
  }

  /* ---------------- agent node ---------------- */

  /** The agent (re)connected here: every owner learns it (queued executions start, running ones resume). */
  connected(agentId: string, hello: Hello): void {
    this.via.delete(agentId);
    if (this.d.enabled) this.d.link.broadcast(HELLO, { a: agentId, x: hello.executions });
  }

  /** Whether this node relays an execution's messages to its owner node. */
  relays(executionId: string): boolean {
    return this.owners.has(executionId);
  }

  /** The owner node of a report for an execution this node does not hold (undefined: none known). */
  private ownerFor(agentId: string, executionId: string): string | undefined {
    if (!this.d.enabled || this.d.scheduler.holds(agentId, executionId)) return undefined;
    return this.owners.get(executionId);
  }

  /** An agent's report: true when it went to the execution's owner node. */
  report(agentId: string, m: Report): boolean {
    const owner = this.ownerFor(agentId, m.executionId);
    if (owner === undefined) return false;
    this.d.link.send(owner, FROM_AGENT, { a: agentId, m } satisfies FromAgent);
    return true;
  }

  /** A report this node could not route from memory, sent to the owner found in the database (later ones follow it). */
  forward(owner: string, agentId: string, m: Report): void {
    if (!this.d.enabled) return;
    remember(this.owners, m.executionId, owner, this.d.bounds.maxRelayedExecutions);
    this.d.link.send(owner, FROM_AGENT, { a: agentId, m } satisfies FromAgent);
  }

  /** An output chunk: true when it went to the execution's owner node (the socket pauses while that owner is pressured). */
  output(agentId: string, ch: AgentChannel, executionId: string, stream: Stream, seq: number, data: Uint8Array): boolean {
    const owner = this.ownerFor(agentId, executionId);
    if (owner === undefined) return false;
    this.d.link.send(owner, FROM_AGENT, { a: agentId, o: [executionId, stream, seq] } satisfies FromAgent, data);
    if (this.pressured.has(owner) && this.held.get(agentId)?.ch !== ch) {
      this.held.set(agentId, { ch, owner });
      ch.pause?.();
    }
    return true;
  }

  /* ---------------- owner ---------------- */

  /** This node's output writer crossed its high-water mark (on) or caught up (off). */
  pressure(on: boolean): void {
    if (this.d.enabled) this.d.link.broadcast(PRESSURE, { on });
  }

  /** A live output chunk of a task this node runs: to the other nodes whose consoles follow it. */
  liveOutput(taskId: string, executionId: string, stream: Stream, seq: number, data: Uint8Array): void {
    const nodes = this.watchers.get(taskId);
    if (!nodes) return;
    for (const n of nodes) this.d.link.send(n, LIVE, { t: taskId, e: executionId, s: stream, q: seq }, data);
  }

  liveEnded(taskId: string, executionId: string, nextSeq: number): void {
    const nodes = this.watchers.get(taskId);
    if (!nodes) return;
    for (const n of nodes) this.d.link.send(n, LIVE_END, { t: taskId, e: executionId, n: nextSeq });
  }

  /* ---------------- console node ---------------- */

  /** A console here follows a task: its owner (whichever node) sends the live output here. */
  watch(taskId: string): void {
    if (this.d.enabled) this.d.link.broadcast(WATCH, { t: taskId });
  }

  /** A console here stopped following a task: when none is left, the owner stops sending. */
  unwatched(taskId: string): void {
    if (this.d.enabled && this.d.fanout.subscribers(taskId) === 0) this.d.link.broadcast(WATCH_END, { t: taskId });
  }

  /** Cancel a task another node runs (its answer: the task's view, or that node's error). */
  cancelRemote(owner: string, taskId: string, actor: Actor): Promise<unknown> {
    return this.d.link.request(owner, CANCEL_TASK, { t: taskId, actor }, undefined, REMOTE_CANCEL_TIMEOUT_MS);
  }

  /** This node took these tasks of the dead node `from` over: every other node learns it. */
  taken(from: string, taskIds: string[]): void {
    if (this.d.enabled && taskIds.length) this.d.link.broadcast(TAKEN, { from, t: taskIds });
  }

  /** Whether a task belongs to another node that is alive (its scheduler settles its executions). */
  ownedElsewhere(ownerNode: string | null | undefined, liveNodes: () => string[]): boolean {
    return this.d.enabled && ownerNode != null && ownerNode !== this.nodeId && liveNodes().includes(ownerNode);
  }
}
