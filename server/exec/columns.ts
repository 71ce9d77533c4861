import type { Execution } from './model.js';

/** Column patch of one execution row (camelCase keys of Execution). */
export type ExecPatch = Partial<Omit<Execution, 'id' | 'taskId' | 'agentId' | 'agentName'>>;

/** Column of each patchable field (fixed: SQL is built from these names, never from input). */
export const COLS: Record<keyof ExecPatch, string> = {
  status: 'status',
  reason: 'reason',
  exitCode: 'exit_code',
  signal: 'signal',
  queuedUntil: 'queued_until',
  dispatchedAt: 'dispatched_at',
  startedAt: 'started_at',
  finishedAt: 'finished_at',
  outputBytes: 'output_bytes',
  nextSeq: 'next_seq',
  truncated: 'truncated',
  containment: 'containment',
  reconciledAt: 'reconciled_at',
};
