import type { ExecutionState, ServerToAgent } from '../../protocol/index.js';
import type { Bus } from '../bus/bus.js';
import type { Fleet } from '../fleet/fleet.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { deriveTaskStatus, executionView, FAILURE_STATES, isFinal, resolveLimit, taskView, type Execution, type Task } from './model.js';
import type { ExecWriter } from './output-store.js';
import { taskDenial } from './policy.js';
import type { ExecPatch, ExecRepo } from './repository.js';

/** Script bytes carried by pushed task updates (the full script is in GET /api/tasks/:id). */
const PUSH_SCRIPT_CHARS = 4096;

/**
 * The task as pushed to every console, several times a second while it runs: the script is cut to
 * its head, so a 1 MiB script on a big fleet does not cost every console megabytes per second.
 */
function pushView(task: Task, counts: Partial<Record<ExecutionState, number>>) {
  return taskView(task.script.length > PUSH_SCRIPT_CHARS ? { ...task, script: task.script.slice(0, PUSH_SCRIPT_CHARS) } : task, counts);
}

/** The exec.run that asks an agent to run execution `e` of task `t`. */
function runMessage(t: Task, e: Execution): ServerToAgent {
  return {
    type: 'exec.run', executionId: e.id, taskId: t.id, script: t.script, interpreter: t.interpreter, args: t.args,
    env: t.env, cwd: t.cwd, timeoutSec: t.timeoutSec, ...(t.signature ? { signature: t.signature } : {}),
  };
}

/** A task with executions not yet final, held in memory while it runs. */
export interface ActiveTask {
  task: Task;
  executions: Execution[];
  /** Pending executions in target order, read from `head` (entries before it are stale). */
  pending: Execution[];
  head: number;
  window: number;
  maxFailures: number | null;
  failures: number;
  /** Executions whose cancel was sent to the agent, awaiting its confirmation. */
  cancelling: Set<string>;
  /** No more dispatches (maxFailures passed, or cancelled). */
  stopped: boolean;
  /** Executions dispatched or running, and executions not final: kept as counters so that each
   *  dispatch and each result costs O(1), not a scan of a task with tens of thousands of targets. */
  active: number;
  open: number;
}

export interface SchedulerDeps {
  repo: ExecRepo; writer: ExecWriter; fleet: Fleet; bus: Bus; log: Logger; metrics: Metrics;
  maxExecutionsPerAgent: number; reconcileTimeoutMs: number;
}

/**
 * The dispatcher: owns every active task and execution in memory, sends `exec.run` within each
 * task's sliding window (`concurrency`) and each agent's limit, applies `maxFailures`, and moves
 * executions to their final states. Every state change is queued to the batched writer and
 * published on the bus; memory is the truth for active tasks, the database for finished ones.
 */
export class Scheduler {
  readonly tasks = new Map<string, ActiveTask>();
  readonly executions = new Map<string, Execution>();
  /** Dispatched/running executions per agent (the per-agent limit and reconciliation). */
  private readonly busy = new Map<string, Set<Execution>>();
  /** Tasks with pending executions that wait for an agent (offline or at its limit). */
  private readonly waiting = new Map<string, Set<string>>();
  /** When an agent with dispatched/running executions went away (or the server started). */
  readonly goneSince = new Map<string, number>();
  private readonly dirtyTasks = new Set<string>();
  private readonly startedAt = Date.now();
  /** Pending executions loaded at server start (their dispatch may have happened but not been stored). */
  readonly loadedPending = new Set<string>();
  /** Completed tasks whose final row is still being stored (their executions stay readable until then). */
  private readonly completing = new Map<string, Promise<void>>();
  private readonly taskWrites = new Map<string, Promise<void>>();
  private publishTimer: NodeJS.Timeout | undefined;

  constructor(private readonly d: SchedulerDeps) {}

  /** Registers a task (new, or loaded at start) and dispatches what it can. */
  add(task: Task, executions: Execution[]): ActiveTask {
    const total = executions.length;
    const at: ActiveTask = {
      task, executions, pending: executions.filter((e) => e.status === 'pending'), head: 0,
      window: resolveLimit(task.concurrency, total, 1) ?? Number.POSITIVE_INFINITY,
      maxFailures: resolveLimit(task.maxFailures, total, 0),
      failures: executions.filter((e) => FAILURE_STATES.includes(e.status)).length,
      cancelling: new Set(),
      stopped: task.cancelledAt != null,
      active: executions.filter((e) => e.status === 'dispatched' || e.status === 'running').length,
      open: executions.filter((e) => !isFinal(e.status)).length,
    };
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

  private busySet(agentId: string): Set<Execution> {
    let s = this.busy.get(agentId);
    if (!s) this.busy.set(agentId, (s = new Set()));
    return s;
  }

  busyOf(agentId: string): Execution[] {
    return [...(this.busy.get(agentId) ?? [])];
  }

  /** Queues a row update and publishes the execution. */
  change(e: Execution, patch: ExecPatch): void {
    if (patch.status === 'running' && e.status === 'dispatched' && e.dispatchedAt != null) {
      this.d.metrics.dispatchLatency.observe(Math.max(0, Date.now() - e.dispatchedAt) / 1000);
    }
    Object.assign(e, patch);
    this.d.writer.update(e.id, patch);
    this.d.bus.publish('execution.updated', { execution: executionView(e) });
    this.markDirty(e.taskId);
  }

  /** Dispatches pending executions of `at` while its window and their agents allow. */
  pump(at: ActiveTask): void {
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
      const sent = this.d.fleet.send(e.agentId, runMessage(at.task, e));
      if (!sent) {
        this.wait(e.agentId, at.task.id);
        skipped.push(e);
        continue;
      }
      this.busySet(e.agentId).add(e);
      this.change(e, { status: 'dispatched', dispatchedAt: Date.now() });
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
  redispatch(e: Execution): boolean {
    const at = this.tasks.get(e.taskId);
    if (!at || e.status !== 'dispatched') return false;
    if (!this.d.fleet.send(e.agentId, runMessage(at.task, e))) return false;
    this.change(e, { dispatchedAt: Date.now() });
    return true;
  }

  private wait(agentId: string, taskId: string): void {
    let s = this.waiting.get(agentId);
    if (!s) this.waiting.set(agentId, (s = new Set()));
    s.add(taskId);
  }

  /** An agent connected or freed a slot: pump the tasks that wait for it. */
  wake(agentId: string): void {
    const s = this.waiting.get(agentId);
    if (!s) return;
    this.waiting.delete(agentId);
    for (const id of s) {
      const at = this.tasks.get(id);
      if (at) this.pump(at);
    }
  }

  /** Resolves once the completion of `taskId` (if one is being stored) is in the database. */
  settled(taskId: string): Promise<void> {
    return this.completing.get(taskId) ?? Promise.resolve();
  }

  /**
   * Makes a completed task active again, read back from the database, because one of its `lost`
   * executions turned out to have run (its agent reported it late): its counts and status are
   * derived afresh when that execution ends.
   */
  reopen(task: Task, executions: Execution[]): ActiveTask {
    task.status = 'running';
    task.finishedAt = null;
    const at = this.add(task, executions);
    this.writeTask(task.id, { status: 'running', finishedAt: null })
      .catch((err: unknown) => this.d.log.error({ err, taskId: task.id }, 'could not store a reopened task'));
    this.markDirty(task.id);
    return at;
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
      status: 'running', reason: null, finishedAt: null, dispatchedAt: e.dispatchedAt ?? Date.now(),
      ...(e.status === 'lost' ? { reconciledAt: Date.now() } : {}),
    });
  }

  /** Moves an execution to a final state, applies maxFailures, pumps, and completes the task. */
  finish(e: Execution, status: ExecutionState, patch: ExecPatch = {}): void {
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
    if (e.startedAt != null && e.finishedAt != null) this.d.metrics.executionDuration.observe({ state: status }, Math.max(0, e.finishedAt - e.startedAt) / 1000);
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

  counts(at: ActiveTask): Partial<Record<ExecutionState, number>> {
    const c: Partial<Record<ExecutionState, number>> = {};
    for (const e of at.executions) c[e.status] = (c[e.status] ?? 0) + 1;
    return c;
  }

  /** When no execution is open any more: derive the task's status, store it, forget the task. */
  maybeComplete(at: ActiveTask): void {
    if (!this.tasks.has(at.task.id)) return;
    if (at.open > 0) return;
    const counts = this.counts(at);
    at.task.status = deriveTaskStatus(counts, at.task.cancelledAt != null);
    at.task.finishedAt = Date.now();
    this.tasks.delete(at.task.id);
    this.d.metrics.tasksFinished.inc({ state: at.task.status });
    // Keep the executions readable from memory until their rows are committed.
    const stored = new Promise<void>((resolve) => this.d.writer.afterFlush(() => {
      void this.writeTask(at.task.id, { status: at.task.status, finishedAt: at.task.finishedAt }).then(() => {
        for (const e of at.executions) if (this.executions.get(e.id) === e) this.executions.delete(e.id);
        this.d.bus.publish('task.updated', { task: pushView(at.task, counts) });
      }).catch((err: unknown) => this.d.log.error({ err, taskId: at.task.id }, 'could not store task completion'))
        .finally(() => {
          if (this.completing.get(at.task.id) === stored) this.completing.delete(at.task.id);
          resolve();
        });
    }));
    this.completing.set(at.task.id, stored);
    this.dirtyTasks.delete(at.task.id);
  }

  /** Task row writes of one task, in order (a reopen's `running` must not land after the next completion). */
  private writeTask(taskId: string, patch: Parameters<ExecRepo['updateTask']>[1]): Promise<void> {
    const prev = this.taskWrites.get(taskId) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(() => this.d.repo.updateTask(taskId, patch));
    this.taskWrites.set(taskId, next);
    void next.catch(() => {}).finally(() => {
      if (this.taskWrites.get(taskId) === next) this.taskWrites.delete(taskId);
    });
    return next;
  }

  markDirty(taskId: string): void {
    this.dirtyTasks.add(taskId);
    this.publishTimer ??= setTimeout(() => {
      this.publishTimer = undefined;
      for (const id of this.dirtyTasks) {
        const at = this.tasks.get(id);
        if (at) this.d.bus.publish('task.updated', { task: pushView(at.task, this.counts(at)) });
      }
      this.dirtyTasks.clear();
    }, 200);
  }

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
        } else if (e.status === 'dispatched' && e.dispatchedAt != null && this.d.fleet.isOnline(e.agentId) && now - e.dispatchedAt > this.d.reconcileTimeoutMs) {
          this.finish(e, 'lost', { reason: 'the agent never started it', finishedAt: now });
        }
      }
    }
  }

  stop(): void {
    clearTimeout(this.publishTimer);
  }
}
