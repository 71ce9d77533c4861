import type { ExecutionState, ExecutionView, TaskView } from '../../protocol/index.js';
import { FINAL_EXECUTION_STATES } from '../../protocol/index.js';

/** One execution as the server holds it while its task is active (mirrors the executions row). */
export interface Execution {
  id: string;
  taskId: string;
  agentId: string;
  agentName: string;
  status: ExecutionState;
  reason: string | null;
  exitCode: number | null;
  signal: string | null;
  queuedUntil: number | null;
  dispatchedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  outputBytes: number;
  /** Next output sequence number expected from the agent (everything below was received). */
  nextSeq: number;
  truncated: boolean;
  containment: string | null;
  /** When a `lost` execution took the real result its agent reported late (null otherwise). */
  reconciledAt: number | null;
}

/** What an agent is asked to run (the task's spec). */
export interface TaskSpec {
  script: string;
  interpreter: string;
  args: string[];
  env: Record<string, string>;
  cwd: string | null;
  timeoutSec: number;
  /** base64 ed25519 signature over scriptSigningMessage (protocol/policy.ts); null = unsigned. */
  signature: string | null;
}

/** A task as stored. */
export interface Task extends TaskSpec {
  id: string;
  /** Given at creation, else the script's first meaningful line (defaultTaskName). */
  name: string;
  scriptSha256: string;
  targets: unknown;
  concurrency: string | null;
  maxFailures: string | null;
  offline: 'skip' | 'queue';
  queueTtlSec: number | null;
  createdBy: string;
  createdAt: number;
  status: TaskView['status'];
  total: number;
  finishedAt: number | null;
  cancelledAt: number | null;
  cancelledBy: string | null;
  rerunOf: string | null;
  /** The library script version this task runs (null for an ad-hoc script), and the schedule that fired it. */
  scriptId: string | null;
  scriptVersion: number | null;
  scheduleId: string | null;
  /** Env names whose values are write-only (secret script parameters): never in a view. */
  secretEnv: string[];
  /** The server node whose scheduler runs it (issue 12; null: stored before clustering). */
  ownerNode?: string | null;
}

export const isFinal = (s: ExecutionState): boolean => FINAL_EXECUTION_STATES.includes(s);
/** States that count against maxFailures and that a failed-only rerun picks. */
export const FAILURE_STATES: readonly ExecutionState[] = ['failed', 'timeout', 'lost', 'policy_denied'];
/** States an `execution.failed` notification is sent for (server/notifications): published while a rule names that event. */
export const NOTIFIED_EXECUTION_STATES: readonly ExecutionState[] = ['failed', 'timeout', 'lost'];

const iso = (t: number | null) => (t == null ? null : new Date(t).toISOString());

/** Derives a task's status from its executions' states. */
export function deriveTaskStatus(counts: Partial<Record<ExecutionState, number>>, cancelled: boolean): TaskView['status'] {
  let open = 0;
  for (const s of ['pending', 'dispatched', 'running'] as const) open += counts[s] ?? 0;
  if (open > 0) return 'running';
  if (cancelled && (counts.cancelled ?? 0) > 0) return 'cancelled';
  for (const s of FAILURE_STATES) if ((counts[s] ?? 0) > 0) return 'failed';
  if ((counts.cancelled ?? 0) > 0) return 'cancelled';
  return 'succeeded';
}

export function executionView(e: Execution): ExecutionView {
  return {
    id: e.id,
    taskId: e.taskId,
    agentId: e.agentId,
    agentName: e.agentName,
    status: e.status,
    exitCode: e.exitCode,
    signal: e.signal,
    startedAt: iso(e.startedAt),
    finishedAt: iso(e.finishedAt),
    durationMs: e.startedAt != null && e.finishedAt != null ? e.finishedAt - e.startedAt : null,
    truncated: e.truncated,
    reason: e.reason,
    outputBytes: e.outputBytes,
    outputSeq: e.nextSeq,
    containment: e.containment,
    reconciledAt: iso(e.reconciledAt),
  };
}

export function taskView(t: Task, counts: Partial<Record<ExecutionState, number>>): TaskView & Record<string, unknown> {
  return {
    id: t.id,
    name: t.name,
    script: t.script,
    interpreter: t.interpreter,
    args: t.args,
    targets: t.targets,
    createdBy: t.createdBy,
    createdAt: new Date(t.createdAt).toISOString(),
    status: t.status,
    counts,
    total: t.total,
    env: publicEnv(t),
    secretEnv: t.secretEnv,
    cwd: t.cwd,
    timeoutSec: t.timeoutSec,
    concurrency: t.concurrency,
    maxFailures: t.maxFailures,
    offline: t.offline,
    queueTtlSec: t.queueTtlSec,
    scriptSha256: t.scriptSha256,
    finishedAt: iso(t.finishedAt),
    cancelledAt: iso(t.cancelledAt),
    cancelledBy: t.cancelledBy,
    rerunOf: t.rerunOf,
    scriptId: t.scriptId,
    scriptVersion: t.scriptVersion,
    scheduleId: t.scheduleId,
    signature: t.signature,
  };
}

/** The task's env without its write-only values. */
function publicEnv(t: Task): Record<string, string> {
  if (t.secretEnv.length === 0) return t.env;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(t.env)) if (!t.secretEnv.includes(k)) out[k] = v;
  return out;
}

/** Resolves a count-or-percentage limit (`3`, `"25%"`) against a total. */
export function resolveLimit(v: string | null, total: number, min: number): number | null {
  if (v == null) return null;
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v);
  if (m) return Math.max(min, Math.floor((Number(m[1]) * total) / 100));
  return Math.max(min, Number(v));
}
