/** Task and execution rows for tests that write them through ExecRepo directly (no server). */
import { randomUUID } from 'node:crypto';
import type { Execution, Task } from '../../server/exec/model.js';

/** A running task of `n` targets, created now by admin. */
export function taskRow(n: number, name = 'w'): Task {
  return {
    id: randomUUID(),
    name,
    script: `echo ${name}`,
    scriptSha256: '0'.repeat(64),
    interpreter: 'sh',
    args: [],
    env: {},
    cwd: null,
    timeoutSec: 60,
    targets: { selector: 'all' },
    concurrency: null,
    maxFailures: null,
    offline: 'skip',
    queueTtlSec: null,
    createdBy: 'admin',
    createdAt: Date.now(),
    status: 'running',
    total: n,
    finishedAt: null,
    cancelledAt: null,
    cancelledBy: null,
    rerunOf: null,
    scriptId: null,
    scriptVersion: null,
    scheduleId: null,
    secretEnv: [],
    signature: null,
  };
}

/** The `i`th pending execution of `taskId` (agent `agent-i` on `host-0000i`). */
export function executionRow(taskId: string, i: number): Execution {
  return {
    id: randomUUID(),
    taskId,
    agentId: `agent-${i}`,
    agentName: `host-${String(i).padStart(5, '0')}`,
    status: 'pending',
    reason: null,
    exitCode: null,
    signal: null,
    queuedUntil: null,
    dispatchedAt: null,
    startedAt: null,
    finishedAt: null,
    outputBytes: 0,
    nextSeq: 0,
    truncated: false,
    containment: null,
    reconciledAt: null,
  };
}
