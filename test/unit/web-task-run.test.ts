import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

// The console's live task (web/src/features/tasks/taskRun.ts) with its socket and REST client
// replaced: the order in which a snapshot and the pushes that race it land.

const h = vi.hoisted(() => ({
  handlers: new Map<string, (m: unknown) => void>(),
  ready: [] as Array<() => void>,
  sent: [] as unknown[],
  gets: [] as Array<{ path: string; resolve: (v: unknown) => void }>,
}));

vi.mock('../../web/src/composables/socket', () => ({
  onMessage: (type: string, fn: (m: unknown) => void) => {
    h.handlers.set(type, fn);
    return () => h.handlers.delete(type);
  },
  onReady: (fn: () => void) => {
    h.ready.push(fn);
    return () => undefined;
  },
  onFrame: () => () => undefined,
  send: (m: unknown) => void h.sent.push(m),
}));
vi.mock('../../web/src/api/client', () => ({
  api: { get: (path: string) => new Promise((resolve) => h.gets.push({ path, resolve })) },
}));

/** What the test uses of TaskRun (the web code resolves imports as the bundler does, so the server's type check does not read it). */
interface TaskRunLike {
  task: { value: { status: string } | null };
  execs: Map<string, { status: string }>;
  resync(): Promise<void>;
  dispose(): void;
}
const modulePath = '../../web/src/features/tasks/taskRun.js';
const { TaskRun } = (await import(modulePath)) as { TaskRun: new (taskId: string) => TaskRunLike };

const task = (status: string, counts: Record<string, number>) => ({ id: 't1', name: 'demo', status, counts, script: 'true' });
const exec = (id: string, status: string) => ({ id, taskId: 't1', agentId: id, status, outputBytes: 0 });
const push = (type: string, m: unknown) => h.handlers.get(type)!(m);
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('TaskRun: a snapshot and the pushes that race it', () => {
  beforeEach(() => {
    vi.stubGlobal('requestAnimationFrame', (cb: () => void) => setTimeout(cb, 0));
    vi.stubGlobal('cancelAnimationFrame', (id: ReturnType<typeof setTimeout>) => clearTimeout(id));
    h.handlers.clear();
    h.gets.length = 0;
  });
  afterEach(() => vi.unstubAllGlobals());

  it("keeps the task's end pushed while an older snapshot (still running) was in flight", async () => {
    const run = new TaskRun('t1');
    void run.resync();
    expect(h.gets).toHaveLength(1);
    // The task ends while the snapshot is being read: its executions and its end are pushed first.
    push('execution.updated', { execution: exec('a', 'succeeded') });
    push('execution.updated', { execution: exec('b', 'failed') });
    push('task.updated', { task: task('failed', { succeeded: 1, failed: 1 }) });
    // The snapshot was read before: still running, both executions running.
    h.gets[0]!.resolve({ ...task('running', { running: 2 }), executions: [exec('a', 'running'), exec('b', 'running')] });
    await tick();
    expect(run.task.value?.status).toBe('failed');
    expect([...run.execs.values()].map((e) => e.status)).toEqual(['succeeded', 'failed']);
    run.dispose();
  });

  it('takes the snapshot when it is the newer one', async () => {
    const run = new TaskRun('t1');
    void run.resync();
    push('task.updated', { task: task('running', { running: 1, pending: 1 }) });
    h.gets[0]!.resolve({ ...task('succeeded', { succeeded: 2 }), executions: [exec('a', 'succeeded'), exec('b', 'succeeded')] });
    await tick();
    expect(run.task.value?.status).toBe('succeeded');
    run.dispose();
  });
});
