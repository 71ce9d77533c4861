import { rejectCodeOf, RejectCode, type AgentMessage, type ExecutionState, type Hello, type Stream } from '../../protocol/index.js';
import type { Bus } from '../bus/bus.js';
import type { Fleet } from '../fleet/fleet.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { activeTask, countsOf, pushView, runMessage, runMessageJson, type ActiveTask } from './active-task.js';
import type { ConsoleFanout } from './fanout.js';
import { deriveTaskStatus, executionView, FAILURE_STATES, isFinal, type Execution, type Task } from './model.js';
import type { ExecWriteBatcher } from './write-batcher.js';
import { taskDenial } from './policy.js';
import type { ExecPatch, ExecRepo } from './repo.js';

/** Why output is missing when it is: an execution that lost output says so (`truncated` + reason). */
const TRUNCATED_GAP = 'output truncated: part of it was lost while the agent and the server were apart';
const TRUNCATED_BY_AGENT = "output truncated: the agent's output buffer filled while the server was unreachable";

type Counts = Partial<Record<ExecutionState, number>>;
/** An execution an agent names in its hello. */
export type NamedExecution = Hello['executions'][number];

export interface SchedulerDeps {
  repo: Pick<ExecRepo, 'updateTask' | 'loadActive' | 'storedOutput'>;
  writer: Pick<ExecWriteBatcher, 'update' | 'output' | 'afterFlush'>;
  fleet: Pick<Fleet, 'isOnline' | 'send' | 'get'>;
  bus: Pick<Bus, 'publish'>;
  /** Live output for the consoles that follow a task. */
  live: Pick<ConsoleFanout, 'output' | 'ended'>;
  /**
   * Whether anyone follows an execution's changes now (a console watching its task, a
   * notification rule for its new state, another node): `execution.updated` is built and published
   * only then. Asked after the change is applied (`e` carries its new state).
   */
  watched(e: Execution): boolean;
  log: Logger;
  metrics: Metrics;
  maxExecutionsPerAgent: number;
  reconcileTimeoutMs: number;
  /** Stored output per execution before it is truncated (MUSTER_MAX_OUTPUT_BYTES). */
  maxOutputBytes: number;
  /** Cluster: this node's id; at start only the active tasks it owns are restored. */
  ownerNode?: string;
}

/**
 * The dispatcher: owns every active task and execution in memory, sends `exec.run` within each
 * task's sliding window (`concurrency`) and each agent's limit, applies `maxFailures`, takes the
 * agent's reports, reconciles with an agent that comes back (and with the database after a
 * restart), and moves executions to their final states. Every state change is queued to the
 * batched writer, and published on the bus when someone follows it (`watched`); memory is the
 * truth for active tasks, the database for finished ones. Its state is private: everything else goes through the operations below.
 */
export class Scheduler {
  private readonly tasks = new Map<string, ActiveTask>();
  private readonly executions = new Map<string, Execution>();
  /** Dispatched/running executions per agent (the per-agent limit and reconciliation). */
  private readonly busy = new Map<string, Set<Execution>>();
  /** Tasks with pending executions that wait for an agent (offline or at its limit). */
  private readonly waiting = new Map<string, Set<string>>();
  /** When an agent with dispatched/running executions went away (or the server started). */
  private readonly goneSince = new Map<string, number>();
  private readonly dirtyTasks = new Set<string>();
  private readonly startedAt = Date.now();
  /** Pending executions loaded at server start (their dispatch may have happened but not been stored). */
  private readonly loadedPending = new Set<string>();
  /** Completed tasks whose final row is still being stored (their executions stay readable until then). */
  private readonly completing = new Map<string, Promise<void>>();
  private readonly taskWrites = new Map<string, Promise<boolean>>();
  private publishTimer: NodeJS.Timeout | undefined;

  constructor(private readonly d: SchedulerDeps) {}

  /* ---------------- reads ---------------- */

  /** Active tasks. */
  get size(): number {
    return this.tasks.size;
  }

  /** An execution held in memory (its task active, or its completion still being stored). */
  get(executionId: string): Execution | undefined {
    return this.executions.get(executionId);
  }

  /** Whether the server holds this execution as one of this agent's (a reply it is owed). */
  holds(agentId: string, executionId: string): boolean {
    return this.executions.get(executionId)?.agentId === agentId;
  }

  isActive(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  /** An active task, its live counts and executions (null when it is not active). */
  view(taskId: string): { task: Task; counts: Counts; executions: readonly Execution[] } | null {
    const at = this.tasks.get(taskId);
    return at ? { task: at.task, counts: countsOf(at), executions: at.executions } : null;
  }

  /** Resolves once the completion of `taskId` (if one is being stored) is in the database. */
  settled(taskId: string): Promise<void> {
    return this.completing.get(taskId) ?? Promise.resolve();
  }

  /* ---------------- tasks ---------------- */

  /** Takes a new task (already stored) and dispatches what it can; returns its counts. */
  submit(task: Task, executions: Execution[]): Counts {
    const at = this.add(task, executions);
    this.pump(at);
    this.maybeComplete(at);
    this.markDirty(task.id);
    return countsOf(at);
  }

  /**
   * After a server start: reads the active tasks back. Dispatched and running executions wait up
   * to reconcileTimeoutMs for their agent's hello (then `lost`); pending ones whose dispatch may
   * have happened without being stored are remembered as such.
   */
  async restore(): Promise<{ tasks: number; executions: number }> {
    const { tasks, executions } = await this.d.repo.loadActive(this.d.ownerNode);
    await this.load(tasks, executions);
    return { tasks: tasks.length, executions: executions.length };
  }

  /**
   * Cluster: tasks of a dead node this node now owns (ExecRepo.takeOver), restored as a restart
   * would, except that their agents are connected (to other nodes) and send no hello: running
   * executions are asked to resend their output from what is stored, then their result;
   * unconfirmed dispatches are sent again (the agent's journal refuses a duplicate) and asked the
   * same; queued executions dispatch within their windows; an agent that is away has
   * reconcileTimeoutMs to come back. Returns how many executions were resumed.
   */
  async takeOver(tasks: Task[], executions: Execution[]): Promise<{ tasks: number; resumed: number }> {
    const fresh = tasks.filter((t) => !this.tasks.has(t.id));
    const ids = new Set(fresh.map((t) => t.id));
    await this.load(
      fresh,
      executions.filter((e) => ids.has(e.taskId)),
    );
    let resumed = 0;
    for (const id of ids) {
      const at = this.tasks.get(id);
      if (!at) continue;
      for (const e of at.executions) {
        if (e.status !== 'dispatched' && e.status !== 'running') continue;
        if (!this.d.fleet.isOnline(e.agentId)) continue; // goneSince is set: it waits for the agent's hello
        if (e.status === 'dispatched') this.redispatch(e);
        if (at.task.cancelledAt != null) {
          at.cancelling.add(e.id);
          this.d.fleet.send(e.agentId, { type: 'exec.cancel', executionId: e.id, reason: e.reason ?? `cancelled by ${at.task.cancelledBy ?? 'an operator'}` });
        }
        if (!this.d.fleet.send(e.agentId, { type: 'exec.resume', executionId: e.id, fromSeq: e.nextSeq })) continue;
        this.goneSince.delete(e.agentId);
        resumed++;
      }
    }
    return { tasks: ids.size, resumed };
  }

  /**
   * Cluster: forgets an active task another node owns now (it took the task over while this node
   * was cut off). Nothing is written or published for it any more; its executions' reports are
   * not this node's to take (the agent node routes them to the new owner).
   */
  release(taskId: string): boolean {
    const at = this.tasks.get(taskId);
    if (!at) return false;
    this.tasks.delete(taskId);
    this.dirtyTasks.delete(taskId);
    for (const e of at.executions) {
      if (this.executions.get(e.id) === e) this.executions.delete(e.id);
      this.busy.get(e.agentId)?.delete(e);
      this.loadedPending.delete(e.id);
    }
    for (const s of this.waiting.values()) s.delete(taskId);
    this.d.metrics.tasksTakenOver.inc({ direction: 'out' });
    return true;
  }

  /** Ids of the active tasks. */
  activeTaskIds(): string[] {
    return [...this.tasks.keys()];
  }

  /** Registers tasks read back from the database (a start, or a takeover) and pumps them. */
  private async load(tasks: Task[], executions: Execution[]): Promise<void> {
    const byTask = new Map<string, Execution[]>();
    for (const e of executions) {
      const list = byTask.get(e.taskId) ?? [];
      list.push(e);
      byTask.set(e.taskId, list);
    }
    const now = Date.now();
    for (const t of tasks) {
      const execs = byTask.get(t.id) ?? [];
      for (const e of execs) {
        if (e.status === 'pending') this.loadedPending.add(e.id);
        if (e.status !== 'dispatched' && e.status !== 'running') continue;
        // The row and the output chunks are written in separate batches, so after a crash either
        // may be ahead: the stored chunks are the truth (the agent resends from there).
        const stored = await this.d.repo.storedOutput(e.id);
        e.nextSeq = stored.nextSeq;
        e.outputBytes = stored.bytes;
        this.goneSince.set(e.agentId, now);
      }
      this.add(t, execs);
    }
    for (const t of tasks) {
      const at = this.tasks.get(t.id);
      if (!at) continue;
      // At a start no agent is online yet: this registers each pending execution as waiting for
      // its agent, so the agent's return (wake) dispatches it. Without it a queued execution
      // loaded here would stay pending until its queue TTL. After a takeover it dispatches.
      this.pump(at);
      this.maybeComplete(at);
    }
  }

  /**
   * Cluster, after restore(): executions running on agents connected to other nodes get no hello
   * (their agents did not reconnect): ask each agent to resend its output from what is stored,
   * then its result. Returns how many were asked.
   */
  resumeConnected(): number {
    let n = 0;
    for (const at of this.tasks.values()) {
      for (const e of at.executions) {
        if (e.status !== 'running' || !this.d.fleet.isOnline(e.agentId)) continue;
        if (!this.d.fleet.send(e.agentId, { type: 'exec.resume', executionId: e.id, fromSeq: e.nextSeq })) continue;
        this.goneSince.delete(e.agentId);
        n++;
      }
    }
    return n;
  }

  /**
   * Cancels an active task: no more dispatches, pending executions cancelled, running ones asked
   * to stop (the agent confirms with exec.finished; an agent that is away is cancelled at once).
   * Null when the task is not active.
   */
  async cancel(taskId: string, by: string): Promise<{ task: Task; counts: Counts; signalled: number } | null> {
    const at = this.tasks.get(taskId);
    if (!at) return null;
    const now = Date.now();
    at.task.cancelledAt = now;
    at.task.cancelledBy = by;
    at.stopped = true;
    // Fenced out (another node took the task over): not ours to cancel; the caller asks the owner.
    if (!(await this.writeTask(taskId, { cancelledAt: now, cancelledBy: by }))) return null;
    const reason = `cancelled by ${by}`;
    let signalled = 0;
    for (const e of at.executions) {
      if (e.status === 'pending') this.finish(e, 'cancelled', { reason, finishedAt: now });
      else if (e.status === 'dispatched' || e.status === 'running') {
        if (this.d.fleet.send(e.agentId, { type: 'exec.cancel', executionId: e.id, reason })) {
          e.reason = reason;
          at.cancelling.add(e.id);
          signalled++;
        } else this.finish(e, 'cancelled', { reason: `${reason} (agent offline)`, finishedAt: now });
      }
    }
    return { task: at.task, counts: countsOf(at), signalled };
  }

  /**
   * Makes a completed task active again, read back from the database, because one of its `lost`
   * executions turned out to have run (its agent reported it late): its counts and status are
   * derived afresh when that execution ends.
   */
  reopen(task: Task, executions: Execution[]): void {
    task.status = 'running';
    task.finishedAt = null;
    this.add(task, executions);
    this.writeTask(task.id, { status: 'running', finishedAt: null }).catch((err: unknown) =>
      this.d.log.error({ err, taskId: task.id }, 'could not store a reopened task'),
    );
    this.markDirty(task.id);
  }

  /* ---------------- agents ---------------- */

  /**
   * An agent registered (its welcome is out): reconciles what the server thinks runs there with
   * what the agent reports, resumes output, and dispatches what waits for it. Returns the
   * executions the agent named that no active task holds (the caller looks them up: a late result
   * of a `lost` one is taken, the rest are over).
   */
  agentReturned(agentId: string, hello: Pick<Hello, 'executions'>): NamedExecution[] {
    const { fleet } = this.d;
    this.goneSince.delete(agentId);
    const named = new Map(hello.executions.map((x) => [x.executionId, x]));
    for (const e of [...(this.busy.get(agentId) ?? [])]) {
      const x = named.get(e.id);
      named.delete(e.id);
      if (!x) {
        // Never confirmed (no exec.started): its exec.run may have died with the old link. Send it
        // again; the agent's journal refuses it if it did arrive, which then makes it `lost`.
        if (e.status === 'dispatched' && this.redispatch(e)) continue;
        this.finish(e, 'lost', { reason: 'the agent did not report this execution when it reconnected (the agent restarted)' });
        continue;
      }
      const at = this.tasks.get(e.taskId);
      if (at?.cancelling.has(e.id) || at?.task.cancelledAt != null) {
        fleet.send(agentId, { type: 'exec.cancel', executionId: e.id, reason: e.reason ?? 'cancelled' });
      }
      fleet.send(agentId, { type: 'exec.resume', executionId: e.id, fromSeq: e.nextSeq });
    }
    // Executions the agent has but the server considers over (or no longer holds): take the real
    // result of a `lost` one, stop or forget the rest.
    const unknown: NamedExecution[] = [];
    for (const x of named.values()) {
      const e = this.executions.get(x.executionId);
      if (e && e.agentId === agentId && this.tasks.has(e.taskId) && (e.status === 'lost' || e.status === 'pending')) {
        // Declared lost while the agent was away, or its dispatch was not yet stored when the
        // server stopped: the agent has it, so take the real result.
        this.takeBack(agentId, e, x.state);
        continue;
      }
      if (e && this.tasks.has(e.taskId)) {
        this.dismiss(agentId, x);
        continue;
      }
      unknown.push(x);
    }
    this.wake(agentId);
    return unknown;
  }

  /** An agent went away: its dispatched/running executions wait reconcileTimeoutMs for it. */
  agentLeft(agentId: string): void {
    if (this.busy.get(agentId)?.size) this.goneSince.set(agentId, Date.now());
  }

  /** Adopts an execution the agent still has (running, or finished and unacked) and asks for the rest of it. */
  takeBack(agentId: string, e: Execution, state: 'running' | 'finished'): void {
    const { fleet } = this.d;
    this.adopt(e);
    const at = this.tasks.get(e.taskId);
    if (state === 'running' && at?.task.cancelledAt != null) {
      // Its task was cancelled while it was lost: the cancel applies now.
      at.cancelling.add(e.id);
      e.reason = `cancelled by ${at.task.cancelledBy ?? 'an operator'}`;
      fleet.send(agentId, { type: 'exec.cancel', executionId: e.id, reason: e.reason });
    }
    fleet.send(agentId, { type: 'exec.resume', executionId: e.id, fromSeq: e.nextSeq });
  }

  /** The server is done with an execution the agent still reports: stop it, or let the agent forget it. */
  dismiss(agentId: string, x: NamedExecution): void {
    if (x.state === 'running') this.d.fleet.send(agentId, { type: 'exec.cancel', executionId: x.executionId, reason: 'the execution is over on the server' });
    else this.d.fleet.send(agentId, { type: 'exec.ack', executionId: x.executionId });
  }

  /** The agent reports an execution the server had as pending or lost: it runs after all. */
  adopt(e: Execution): void {
    const at = this.tasks.get(e.taskId);
    if (at) {
      at.pending = at.pending.slice(at.head).filter((p) => p !== e);
      at.head = 0;
      if (e.status === 'lost') {
        at.failures--;
        at.open++;
      }
      at.active++;
    }
    this.busySet(e.agentId).add(e);
    this.change(e, {
      status: 'running',
      reason: null,
      finishedAt: null,
      dispatchedAt: e.dispatchedAt ?? Date.now(),
      ...(e.status === 'lost' ? { reconciledAt: Date.now() } : {}),
    });
  }

  /* ---------------- the agent's reports ---------------- */

  started(agentId: string, m: AgentMessage<'exec.started'>): void {
    const e = this.own(agentId, m.executionId);
    if (!e || isFinal(e.status)) return;
    if (e.status === 'running' && e.startedAt != null) return;
    this.change(e, { status: 'running', startedAt: m.startedAt, containment: m.containment ?? null }, true);
  }

  /** One output chunk: stored (up to maxOutputBytes), sent to the consoles that follow the task. */
  output(agentId: string, executionId: string, stream: Stream, seq: number, data: Uint8Array): void {
    const e = this.own(agentId, executionId);
    if (!e) return;
    if (seq < e.nextSeq) return; // a resend of something already stored
    const patch: { nextSeq: number; outputBytes?: number; truncated?: boolean; reason?: string } = { nextSeq: seq + 1 };
    if (seq > e.nextSeq && !e.truncated) {
      patch.truncated = true; // the agent could not keep [nextSeq, seq)
      patch.reason = e.reason ?? TRUNCATED_GAP;
    }
    const room = this.d.maxOutputBytes - e.outputBytes;
    let chunk = data;
    if (chunk.length > room) {
      chunk = chunk.subarray(0, Math.max(0, room));
      patch.truncated = true;
      if (!e.truncated) patch.reason = e.reason ?? `output truncated at ${this.d.maxOutputBytes} bytes (MUSTER_MAX_OUTPUT_BYTES)`;
    }
    if (chunk.length > 0) {
      this.d.writer.output(e.id, seq, stream, chunk);
      this.d.metrics.outputBytes.inc({ stream }, chunk.length);
      patch.outputBytes = e.outputBytes + chunk.length;
      this.d.live.output(e.taskId, e.id, stream, seq, chunk);
    }
    const becameTruncated = patch.truncated && !e.truncated;
    // The byte count first: the `running` update below then counts this chunk, which consoles
    // received just before it (they show a live count from the last update plus the chunks since).
    Object.assign(e, patch);
    // The byte count and next seq may wait (a restored execution reads them from its stored chunks); a truncation may not.
    this.d.writer.update(e.id, patch, !patch.truncated);
    if (e.status === 'dispatched') this.change(e, { status: 'running', startedAt: e.startedAt ?? Date.now() }, true);
    if (becameTruncated) this.change(e, { truncated: true });
  }

  /**
   * exec.finished: the result is taken and acknowledged once stored. False when no active task
   * holds the execution (the caller decides: a `lost` one's late result, or over).
   */
  finished(agentId: string, m: AgentMessage<'exec.finished'>): boolean {
    const e = this.own(agentId, m.executionId);
    if (!e || !this.tasks.has(e.taskId)) return false;
    const ack = () => void this.d.fleet.send(agentId, { type: 'exec.ack', executionId: m.executionId });
    if (isFinal(e.status) && e.status !== 'lost') {
      this.d.writer.afterFlush(ack, true);
      return true;
    }
    const truncated = e.truncated || m.truncated || m.outputSeq > e.nextSeq;
    this.finish(e, m.status, {
      exitCode: m.exitCode,
      signal: m.signal,
      startedAt: e.startedAt ?? m.startedAt,
      finishedAt: m.finishedAt,
      truncated,
      reason:
        m.error ??
        m.reason ??
        (m.status === 'cancelled'
          ? (e.reason ?? 'cancelled')
          : m.status === 'timeout'
            ? 'timed out'
            : truncated
              ? (e.reason ?? (m.truncated ? TRUNCATED_BY_AGENT : TRUNCATED_GAP))
              : null),
    });
    this.d.live.ended(e.taskId, e.id, e.nextSeq);
    this.d.writer.afterFlush(ack, true);
    return true;
  }

  rejected(agentId: string, m: AgentMessage<'exec.rejected'>): void {
    const e = this.own(agentId, m.executionId);
    if (!e || isFinal(e.status)) return;
    const at = this.tasks.get(e.taskId);
    if (at?.cancelling.has(e.id)) return this.finish(e, 'cancelled', { reason: `cancelled (${m.reason})` });
    const code = rejectCodeOf(m);
    if (code === RejectCode.policyDenied) return this.finish(e, 'policy_denied', { reason: `refused by the host: ${m.reason}` });
    // A duplicate means the agent saw this id before (and lost it): the run's outcome is unknown.
    const unknown = code === RejectCode.duplicate || code === RejectCode.unknownExecution;
    this.finish(e, unknown ? 'lost' : 'failed', { reason: `agent rejected it: ${m.reason}` });
  }

  /* ---------------- timers ---------------- */

  /** Periodic: queue TTLs, agents that stay away, results that never come. */
  sweep(now = Date.now()): void {
    for (const at of this.tasks.values()) {
      for (const e of at.pending) {
        if (e.status !== 'pending' || this.d.fleet.isOnline(e.agentId)) continue;
        if (e.queuedUntil != null) {
          if (e.queuedUntil <= now) this.finish(e, 'skipped', { reason: 'agent stayed offline past the queue TTL', finishedAt: now });
          continue;
        }
        // Not queued: an agent that went away before its turn does not hold the task open forever.
        const seen = Math.max(this.d.fleet.get(e.agentId)?.lastSeenAt ?? 0, this.startedAt);
        if (now - seen <= this.d.reconcileTimeoutMs) continue;
        const secs = Math.round(this.d.reconcileTimeoutMs / 1000);
        if (this.loadedPending.has(e.id)) {
          // The server stopped before this execution's dispatch was stored: it may have run.
          this.finish(e, 'lost', { reason: `server restarted; the agent did not come back within ${secs} s`, finishedAt: now });
        } else {
          this.finish(e, 'skipped', { reason: `agent went offline before its turn and stayed away ${secs} s`, finishedAt: now });
        }
      }
      for (const e of at.executions) {
        if (e.status !== 'dispatched' && e.status !== 'running') continue;
        const gone = this.goneSince.get(e.agentId);
        if (gone != null && !this.d.fleet.isOnline(e.agentId) && now - gone > this.d.reconcileTimeoutMs) {
          this.finish(e, 'lost', { reason: `agent did not come back within ${Math.round(this.d.reconcileTimeoutMs / 1000)} s`, finishedAt: now });
        } else if (e.startedAt != null && now - e.startedAt > (at.task.timeoutSec + 120) * 1000) {
          this.finish(e, 'lost', { reason: 'no result long after the timeout', finishedAt: now });
        } else if (
          e.status === 'dispatched' &&
          e.dispatchedAt != null &&
          this.d.fleet.isOnline(e.agentId) &&
          now - e.dispatchedAt > this.d.reconcileTimeoutMs
        ) {
          this.finish(e, 'lost', { reason: 'the agent never started it', finishedAt: now });
        }
      }
    }
  }

  stop(): void {
    clearTimeout(this.publishTimer);
  }

  /* ---------------- internals ---------------- */

  /** Registers a task (new, loaded at start, or reopened). */
  private add(task: Task, executions: Execution[]): ActiveTask {
    const at = activeTask(task, executions);
    this.tasks.set(task.id, at);
    for (const e of executions) {
      this.executions.set(e.id, e);
      if (e.status === 'dispatched' || e.status === 'running') this.busySet(e.agentId).add(e);
    }
    // Failures known before anything is dispatched (executions refused up front by host policy,
    // or a task read back at start) count against maxFailures before the first pump.
    this.stopOnFailures(at);
    return at;
  }

  private own(agentId: string, executionId: string): Execution | undefined {
    const e = this.executions.get(executionId);
    return e && e.agentId === agentId ? e : undefined;
  }

  private busySet(agentId: string): Set<Execution> {
    let s = this.busy.get(agentId);
    if (!s) this.busy.set(agentId, (s = new Set()));
    return s;
  }

  /**
   * Queues a row update and publishes the execution to whoever follows it. `defer`: progress
   * before the result (dispatched, running), which the writer may hold back a moment to write it
   * with the result (ExecWriteBatcher.update).
   */
  private change(e: Execution, patch: ExecPatch, defer = false): void {
    if (patch.status === 'running' && e.status === 'dispatched' && e.dispatchedAt != null) {
      this.d.metrics.dispatchLatency.observe(Math.max(0, Date.now() - e.dispatchedAt) / 1000);
    }
    Object.assign(e, patch);
    this.d.writer.update(e.id, patch, defer);
    // Unwatched (the common case of a large batch): no view is built. A console that starts
    // following later reads the task's executions from memory (ExecService.getTask).
    if (this.d.watched(e)) this.d.bus.publish('execution.updated', { execution: executionView(e) });
    this.markDirty(e.taskId);
  }

  /** Dispatches pending executions of `at` while its window and their agents allow. */
  private pump(at: ActiveTask): void {
    if (at.stopped) return;
    // at.pending is a queue read from at.head; executions that must wait (agent offline or at its
    // limit) go back to the front in order, so a window of 1 over 50,000 targets stays O(1) a step.
    const skipped: Execution[] = [];
    let refused = 0;
    while (at.head < at.pending.length && at.active < at.window) {
      const e = at.pending[at.head++]!;
      if (e.status !== 'pending') continue;
      if (!this.d.fleet.isOnline(e.agentId) || this.busySet(e.agentId).size >= this.d.maxExecutionsPerAgent) {
        this.wait(e.agentId, at.task.id);
        skipped.push(e);
        continue;
      }
      // The host's policy may have changed since the task was created (SIGHUP, reconnect).
      const denied = taskDenial(this.d.fleet.get(e.agentId)?.policy ?? null, at.task);
      if (denied) {
        this.settle(e, 'policy_denied', { reason: denied });
        refused++;
        if (at.stopped) break; // maxFailures passed: settle() cancelled the rest
        continue;
      }
      if (!this.d.fleet.send(e.agentId, runMessage(at.task, e), runMessageJson(at.task, e))) {
        this.wait(e.agentId, at.task.id);
        skipped.push(e);
        continue;
      }
      this.busySet(e.agentId).add(e);
      // Deferred: a restart or takeover reconciles a dispatch not yet stored (loadedPending, the agent's hello or journal).
      this.change(e, { status: 'dispatched', dispatchedAt: Date.now() }, true);
      at.active++;
    }
    if (skipped.length || at.head > 1024) {
      at.pending = skipped.concat(at.pending.slice(at.head));
      at.head = 0;
    }
    if (refused) this.maybeComplete(at);
  }

  /**
   * Sends `exec.run` again for an execution the agent never confirmed (no exec.started) and did
   * not name when it reconnected: the first one may have gone down with a silently dead link.
   * The agent's journal refuses it if it did arrive (→ exec.rejected `duplicate`), so it runs at
   * most once either way.
   */
  private redispatch(e: Execution): boolean {
    const at = this.tasks.get(e.taskId);
    if (!at || e.status !== 'dispatched') return false;
    if (!this.d.fleet.send(e.agentId, runMessage(at.task, e), runMessageJson(at.task, e))) return false;
    this.change(e, { dispatchedAt: Date.now() });
    return true;
  }

  private wait(agentId: string, taskId: string): void {
    let s = this.waiting.get(agentId);
    if (!s) this.waiting.set(agentId, (s = new Set()));
    s.add(taskId);
  }

  /** An agent connected or freed a slot: pump the tasks that wait for it. */
  private wake(agentId: string): void {
    const s = this.waiting.get(agentId);
    if (!s) return;
    this.waiting.delete(agentId);
    for (const id of s) {
      const at = this.tasks.get(id);
      if (at) this.pump(at);
    }
  }

  /** Moves an execution to a final state, applies maxFailures, pumps, and completes the task. */
  private finish(e: Execution, status: ExecutionState, patch: ExecPatch = {}): void {
    const at = this.settle(e, status, patch);
    if (!at) return;
    this.pump(at);
    this.wake(e.agentId);
    this.maybeComplete(at);
  }

  /** finish() without the pump that follows (for use inside pump itself); returns the task when it is active. */
  private settle(e: Execution, status: ExecutionState, patch: ExecPatch): ActiveTask | undefined {
    if (isFinal(e.status) && !(e.status === 'lost' && status !== 'lost')) return undefined;
    const wasFailure = FAILURE_STATES.includes(e.status);
    const wasActive = e.status === 'dispatched' || e.status === 'running';
    const wasOpen = !isFinal(e.status);
    this.busy.get(e.agentId)?.delete(e);
    // A real result replacing `lost`: say when, so the history shows it came late.
    const reconciled = e.status === 'lost' ? { reconciledAt: Date.now() } : {};
    this.change(e, { ...patch, ...reconciled, status, finishedAt: patch.finishedAt ?? e.finishedAt ?? Date.now() });
    this.d.metrics.executions.inc({ state: status });
    if (e.startedAt != null && e.finishedAt != null)
      this.d.metrics.executionDuration.observe({ state: status }, Math.max(0, e.finishedAt - e.startedAt) / 1000);
    const at = this.tasks.get(e.taskId);
    if (!at) return undefined;
    at.cancelling.delete(e.id);
    if (wasActive) at.active--;
    if (wasOpen) at.open--;
    if (FAILURE_STATES.includes(status) && !wasFailure) at.failures++;
    this.stopOnFailures(at);
    return at;
  }

  /** Past maxFailures: no more dispatches, and every pending execution is cancelled. */
  private stopOnFailures(at: ActiveTask): void {
    if (at.maxFailures == null || at.failures <= at.maxFailures || at.stopped) return;
    at.stopped = true;
    const reason = `stopped: more than ${at.maxFailures} failure(s) (maxFailures ${at.task.maxFailures})`;
    const pending = at.pending;
    at.pending = [];
    at.head = 0;
    for (const p of pending) if (p.status === 'pending') this.finish(p, 'cancelled', { reason, finishedAt: Date.now() });
  }

  /** When no execution is open any more: derive the task's status, store it, forget the task. */
  private maybeComplete(at: ActiveTask): void {
    if (!this.tasks.has(at.task.id)) return;
    if (at.open > 0) return;
    const counts = countsOf(at);
    at.task.status = deriveTaskStatus(counts, at.task.cancelledAt != null);
    at.task.finishedAt = Date.now();
    this.tasks.delete(at.task.id);
    this.d.metrics.tasksFinished.inc({ state: at.task.status });
    // Keep the executions readable from memory until their rows are committed.
    const stored = new Promise<void>((resolve) =>
      this.d.writer.afterFlush(() => {
        void this.writeTask(at.task.id, { status: at.task.status, finishedAt: at.task.finishedAt })
          .then((ok) => {
            for (const e of at.executions) if (this.executions.get(e.id) === e) this.executions.delete(e.id);
            for (const e of at.executions) this.loadedPending.delete(e.id);
            // Fenced out (another node took it over): that node tells the task's end.
            if (ok) this.d.bus.publish('task.updated', { task: pushView(at.task, counts) });
          })
          .catch((err: unknown) => this.d.log.error({ err, taskId: at.task.id }, 'could not store task completion'))
          .finally(() => {
            if (this.completing.get(at.task.id) === stored) this.completing.delete(at.task.id);
            resolve();
          });
      }),
    );
    this.completing.set(at.task.id, stored);
    this.dirtyTasks.delete(at.task.id);
  }

  /** Task row writes of one task, in order (a reopen's `running` must not land after the next completion). */
  private writeTask(taskId: string, patch: Parameters<ExecRepo['updateTask']>[1]): Promise<boolean> {
    const prev = this.taskWrites.get(taskId) ?? Promise.resolve(true);
    const next = prev
      .catch(() => true)
      .then(() => this.d.repo.updateTask(taskId, patch))
      .then((ok) => {
        // Cluster: the row is another node's now (it took the task over): forget the task.
        if (ok === false && this.d.ownerNode !== undefined && this.release(taskId)) {
          this.d.log.warn({ taskId }, 'another server node owns this task now (taken over); stopped running it here');
        }
        return ok !== false;
      });
    this.taskWrites.set(taskId, next);
    void next
      .catch(() => {})
      .finally(() => {
        if (this.taskWrites.get(taskId) === next) this.taskWrites.delete(taskId);
      });
    return next;
  }

  private markDirty(taskId: string): void {
    this.dirtyTasks.add(taskId);
    this.publishTimer ??= setTimeout(() => {
      this.publishTimer = undefined;
      for (const id of this.dirtyTasks) {
        const at = this.tasks.get(id);
        if (at) this.d.bus.publish('task.updated', { task: pushView(at.task, countsOf(at)) });
      }
      this.dirtyTasks.clear();
    }, 200);
  }
}
