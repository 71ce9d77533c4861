/**
 * ExecWriteBatcher's deferred row updates (MUSTER_EXEC_PROGRESS_WRITE_MS): an execution's progress
 * (dispatched, running, byte counts) waits up to `deferMs` for the execution's next update and is
 * written with it, so a short script's row is written once; progress alone is still written within
 * `deferMs`; a failed write keeps the order of an execution's patches; stop() writes everything.
 * Late after-flush callbacks (acks to agents) run after the flush's others, a slice per turn of the
 * event loop, survive a failed write, and stop() waits for them.
 */
import { describe, expect, it } from 'vitest';
import type { ExecPatch, OutputRow } from '../../server/exec/repo.js';
import { ExecWriteBatcher } from '../../server/exec/write-batcher.js';

const log = { info() {}, warn() {}, error() {}, debug() {}, child: () => log } as never;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function writer(o: { deferMs: number; fail?: () => boolean; intervalMs?: number; batchUpdates?: number }) {
  const batches: Array<{ rows: OutputRow[]; updates: Map<string, ExecPatch> }> = [];
  const stored = new Map<string, ExecPatch>();
  const repo = {
    storeBatch: async (rows: OutputRow[], updates: ReadonlyMap<string, ExecPatch>) => {
      await sleep(1);
      if (o.fail?.()) throw new Error('database away');
      batches.push({ rows, updates: new Map(updates) });
      for (const [id, p] of updates) stored.set(id, { ...(stored.get(id) ?? {}), ...p });
    },
  };
  const w = new ExecWriteBatcher(repo, log, {
    intervalMs: o.intervalMs ?? 5,
    batchUpdates: o.batchUpdates,
    batchBytes: 1 << 20,
    highWaterBytes: 4 << 20,
    maxFlushBytes: 2 << 20,
    onPressure() {},
    retryInitialMs: 20,
    retryMaxMs: 20,
    deferMs: o.deferMs,
  });
  return { w, batches, stored };
}

describe('ExecWriteBatcher: deferred progress', () => {
  it('writes dispatched, running and the result of one execution in one row update, then acks', async () => {
    const { w, batches, stored } = writer({ deferMs: 5_000 });
    w.update('a', { status: 'dispatched', dispatchedAt: 1 }, true);
    w.update('a', { status: 'running', startedAt: 2 }, true);
    w.output('a', 0, 'stdout', new Uint8Array([111, 107]));
    w.update('a', { nextSeq: 1, outputBytes: 2 }, true);
    // Another execution's result: its flush does not take a's progress.
    let acked = false;
    w.update('b', { status: 'succeeded', finishedAt: 3 });
    w.afterFlush(() => (acked = true));
    await w.drain();
    expect(acked).toBe(true);
    expect(stored.get('a')).toBeUndefined();
    expect(batches.flatMap((b) => b.rows.map((r) => r.execution_id))).toEqual(['a']); // output is not deferred
    w.update('a', { status: 'succeeded', exitCode: 0, finishedAt: 4 });
    await w.drain();
    const aWrites = batches.filter((b) => b.updates.has('a'));
    expect(aWrites).toHaveLength(1);
    expect(aWrites[0]!.updates.get('a')).toEqual({
      status: 'succeeded',
      dispatchedAt: 1,
      startedAt: 2,
      nextSeq: 1,
      outputBytes: 2,
      exitCode: 0,
      finishedAt: 4,
    });
    await w.stop();
  });

  it('writes progress alone within deferMs, and at once with deferMs 0', async () => {
    const { w, stored } = writer({ deferMs: 60 });
    w.update('a', { status: 'dispatched', dispatchedAt: 1 }, true);
    await sleep(20);
    expect(stored.get('a')).toBeUndefined();
    for (let i = 0; i < 100 && !stored.get('a'); i++) await sleep(10);
    expect(stored.get('a')).toEqual({ status: 'dispatched', dispatchedAt: 1 });
    await w.stop();

    const now = writer({ deferMs: 0 });
    now.w.update('a', { status: 'dispatched', dispatchedAt: 1 }, true);
    for (let i = 0; i < 100 && !now.stored.get('a'); i++) await sleep(5);
    expect(now.stored.get('a')).toEqual({ status: 'dispatched', dispatchedAt: 1 });
    await now.w.stop();
  });

  it('keeps the order of one execution’s patches across a failed write', async () => {
    let failing = true;
    const { w, stored } = writer({ deferMs: 5_000, fail: () => failing });
    w.update('a', { status: 'succeeded', finishedAt: 4 });
    const flushed = w.flush();
    // While that write is in flight (and fails), a later deferred patch of the same execution.
    w.update('a', { nextSeq: 3 }, true);
    await flushed;
    failing = false;
    w.update('a', { reason: 'late' });
    await w.drain();
    expect(stored.get('a')).toEqual({ status: 'succeeded', finishedAt: 4, nextSeq: 3, reason: 'late' });
    await w.stop();
  });

  it('starts a write at batchUpdates queued results, without waiting for the interval', async () => {
    const { w, batches } = writer({ deferMs: 5_000, intervalMs: 60_000, batchUpdates: 3 });
    w.update('a', { status: 'succeeded' });
    w.update('b', { status: 'succeeded' });
    await sleep(20);
    expect(batches).toHaveLength(0); // below the threshold: the (long) interval
    w.update('c', { status: 'failed' });
    for (let i = 0; i < 100 && batches.length === 0; i++) await sleep(5);
    expect([...batches[0]!.updates.keys()]).toEqual(['a', 'b', 'c']);
    await w.stop();
  });

  it('stop() writes the deferred progress', async () => {
    const { w, stored } = writer({ deferMs: 60_000 });
    w.update('a', { status: 'running', startedAt: 2 }, true);
    await w.stop();
    expect(stored.get('a')).toEqual({ status: 'running', startedAt: 2 });
  });

  it('runs late callbacks after the others of their flush, a slice per turn of the event loop; stop() waits for them', async () => {
    const { w } = writer({ deferMs: 0 });
    const order: string[] = [];
    w.update('a', { status: 'succeeded', finishedAt: 1 });
    for (let i = 0; i < 1200; i++) w.afterFlush(() => order.push(`ack ${i}`), true);
    w.afterFlush(() => order.push('task row'));
    await w.flush();
    // The task's completion first, though queued after the acks; no ack within the flush's turn.
    expect(order).toEqual(['task row']);
    await new Promise((r) => setImmediate(r));
    expect(order.length).toBeGreaterThan(1);
    expect(order.length).toBeLessThan(1201);
    await w.stop();
    expect(order).toEqual(['task row', ...Array.from({ length: 1200 }, (_, i) => `ack ${i}`)]);
  });

  it('keeps late callbacks across a failed write and runs them once it is stored', async () => {
    let failing = true;
    const { w, stored } = writer({ deferMs: 0, fail: () => failing });
    let acked = 0;
    w.update('a', { status: 'succeeded', finishedAt: 1 });
    w.afterFlush(() => acked++, true);
    await w.flush();
    await sleep(5);
    expect(acked).toBe(0);
    failing = false;
    for (let i = 0; i < 100 && acked === 0; i++) await sleep(10);
    expect(stored.get('a')).toEqual({ status: 'succeeded', finishedAt: 1 });
    expect(acked).toBe(1);
    await w.stop();
    expect(acked).toBe(1);
  });
});
