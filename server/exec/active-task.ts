import type { ExecutionState, ServerToAgent } from '../../protocol/index.js';
import { FAILURE_STATES, isFinal, resolveLimit, taskView, type Execution, type Task } from './model.js';

/** Script bytes carried by pushed task updates (the full script is in GET /api/tasks/:id). */
const PUSH_SCRIPT_CHARS = 4096;

/** A task with executions not yet final, held in memory (by the Scheduler only) while it runs. */
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

/** The in-memory state of a task (new, or read back from the database) and its executions. */
export function activeTask(task: Task, executions: Execution[]): ActiveTask {
  const total = executions.length;
  return {
    task,
    executions,
    pending: executions.filter((e) => e.status === 'pending'),
    head: 0,
    window: resolveLimit(task.concurrency, total, 1) ?? Number.POSITIVE_INFINITY,
    maxFailures: resolveLimit(task.maxFailures, total, 0),
    failures: executions.filter((e) => FAILURE_STATES.includes(e.status)).length,
    cancelling: new Set(),
    stopped: task.cancelledAt != null,
    active: executions.filter((e) => e.status === 'dispatched' || e.status === 'running').length,
    open: executions.filter((e) => !isFinal(e.status)).length,
  };
}

/** Executions of a task per state. */
export function countsOf(at: ActiveTask): Partial<Record<ExecutionState, number>> {
  const c: Partial<Record<ExecutionState, number>> = {};
  for (const e of at.executions) c[e.status] = (c[e.status] ?? 0) + 1;
  return c;
}

/**
 * The task as pushed to every console, several times a second while it runs: the script is cut to
 * its head, so a 1 MiB script on a big fleet does not cost every console megabytes per second.
 */
export function pushView(task: Task, counts: Partial<Record<ExecutionState, number>>) {
  return taskView(task.script.length > PUSH_SCRIPT_CHARS ? { ...task, script: task.script.slice(0, PUSH_SCRIPT_CHARS) } : task, counts);
}

/** The exec.run that asks an agent to run execution `e` of task `t`. */
export function runMessage(t: Task, e: Execution): ServerToAgent {
  return { type: 'exec.run', executionId: e.id, ...runBody(t) };
}

/** The task's part of exec.run (the same for every execution of the task; a task's fields do not change once created). */
function runBody(t: Task) {
  return {
    taskId: t.id,
    script: t.script,
    interpreter: t.interpreter,
    args: t.args,
    env: t.env,
    cwd: t.cwd,
    timeoutSec: t.timeoutSec,
    ...(t.signature ? { signature: t.signature } : {}),
  };
}

/** Serialized task parts of exec.run, per task object (dropped with the task). */
const runBodies = new WeakMap<Task, string>();

/**
 * runMessage(t, e) serialized: the task's part (its script may be a MiB) is serialized once per
 * task and spliced after the execution id, so a task on 10,000 agents is not 10,000 serializations
 * of its script. The same JSON text as JSON.stringify(runMessage(t, e)).
 */
export function runMessageJson(t: Task, e: Execution): string {
  let body = runBodies.get(t);
  if (body === undefined) runBodies.set(t, (body = JSON.stringify(runBody(t)).slice(1)));
  return `{"type":"exec.run","executionId":${JSON.stringify(e.id)},${body}`;
}
