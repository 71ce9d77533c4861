/**
 * ExecWriteBatcher with a pipelined store (the execution writer's thread, BatchStore.pipelined):
 * several flushes are handed over without waiting for the previous one's outcome; their
 * after-flush callbacks (acks) still run only once they and every earlier flush committed, in
 * order; a failure puts back the failed flush and every one given after it, in order, before
 * reset() and the retry, so a retried patch never overwrites a newer one; output in flight stays
 * bounded by maxFlushBytes.
 */
import { describe, expect, it } from 'vitest';
import type { ExecPatch, OutputRow } from '../../server/exec/repo.js';
import { ExecWriteBatcher } from '../../server/exec/write-batcher.js';

const log = { info() {}, warn() {}, error() {}, debug() {}, child: () => log } as never;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A store with the pipelined contract: batches are written one after the other in the order
 * given (each takes `latencyMs`); once one fails, every batch given before reset() fails unwritten.
 */
function pipelinedStore(o: { depth: number; latencyMs: number; failAt?: Set<number> }) {
  const committed: Array<{ n: number; rows: OutputRow[]; updates: Map<string, ExecPatch> }> = [];
  const stored = new Map<string, ExecPatch>();
  let given = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let maxBytesInFlight = 0;
  let bytesInFlight = 0;
  let refusing = false;
  let resets = 0;
  let queue = Promise.resolve();
  const store = {
    pipelined: o.depth,
    reset() {
      resets++;
      refusing = false;
    },
    storeBatch(rows: OutputRow[], updates: ReadonlyMap<string, ExecPatch>): Promise<void> {
      const n = given++;
      const bytes = rows.reduce((s, r) => s + r.data.length, 0);
      inFlight++;
      bytesInFlight += bytes;
      maxInFlight = Math.max(maxInFlight, inFlight);
      maxBytesInFlight = Math.max(maxBytesInFlight, bytesInFlight);
      const refused = refusing;
      const done = queue.then(async () => {
        await sleep(o.latencyMs);
        try {
          if (refused || refusing) throw new Error('an earlier write failed; not written');
          if (o.failAt?.has(n)) {
            refusing = true;
            throw Object.assign(new Error('database away'), { code: 'ECONNRESET' });
          }
          committed.push({ n, rows, updates: new Map(updates) });
          for (const [id, p] of updates) stored.set(id, { ...(stored.get(id) ?? {}), ...p });
        } finally {
          inFlight--;
          bytesInFlight -= bytes;
        }
      });
      queue = done.catch(() => {});
      return done;
    },
  };
  return {
    store,
    committed,
    stored,
    stats: () => ({ given, maxInFlight, maxBytesInFlight, resets }),
  };
}

function writer(store: ReturnType<typeof pipelinedStore>['store'], o: { batchUpdates?: number; maxFlushBytes?: number; batchBytes?: number } = {}) {
  return new ExecWriteBatcher(store, log, {
    intervalMs: 5,
    batchUpdates: o.batchUpdates ?? 10,
    batchBytes: o.batchBytes ?? 1 << 20,
    highWaterBytes: 64 << 20,
    maxFlushBytes: o.maxFlushBytes ?? 2 << 20,
    onPressure() {},
    retryInitialMs: 20,
    retryMaxMs: 20,
    deferMs: 0,
  });
}

describe('ExecWriteBatcher: pipelined store', () => {
  it('hands over several flushes at once and runs each one’s acks in order, after its commit', async () => {
    const s = pipelinedStore({ depth: 4, latencyMs: 15 });
    const w = writer(s.store);
    const acks: number[] = [];
    const committedAtAck: number[] = [];
    for (let i = 0; i < 60; i++) {
      w.update(`e${i}`, { status: 'succeeded', finishedAt: i });
      w.afterFlush(
        () => {
          acks.push(i);
          committedAtAck.push(s.stored.has(`e${i}`) ? 1 : 0);
        },
        i % 2 === 0,
      );
    }
    await w.drain();
    await w.stop();
    const st = s.stats();
    // 60 results at batchUpdates 10: four flushes given at once, the rest once the first committed.
    expect(st.given).toBeGreaterThanOrEqual(5);
    expect(st.maxInFlight).toBe(4);
    expect(acks.slice().sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i));
    // Every ack ran after its own result was committed.
    expect(committedAtAck.every((c) => c === 1)).toBe(true);
    // Flushes committed in the order given.
    expect(s.committed.map((c) => c.n)).toEqual(s.committed.map((c) => c.n).sort((a, b) => a - b));
    for (let i = 0; i < 60; i++) expect(s.stored.get(`e${i}`)).toEqual({ status: 'succeeded', finishedAt: i });
  });

  it('puts a failed flush and every later one back in order: the newest patch of an execution wins', async () => {
    // The second flush fails; the third and fourth were given before the failure was known.
    const s = pipelinedStore({ depth: 4, latencyMs: 10, failAt: new Set([1]) });
    const w = writer(s.store, { batchUpdates: 3 });
    const acked: string[] = [];
    const phases: Array<[string, ExecPatch]> = [
      ['a', { status: 'dispatched', dispatchedAt: 1 }],
      ['x1', { status: 'succeeded' }],
      ['x2', { status: 'succeeded' }],
      // flush 2 (fails): a running
      ['a', { status: 'running', startedAt: 2 }],
      ['x3', { status: 'succeeded' }],
      ['x4', { status: 'succeeded' }],
      // flush 3 (refused): a finished
      ['a', { status: 'succeeded', exitCode: 0, finishedAt: 3 }],
      ['x5', { status: 'succeeded' }],
      ['x6', { status: 'succeeded' }],
    ];
    for (const [id, p] of phases) {
      w.update(id, p);
      w.afterFlush(() => acked.push(id), true);
      // Let each flush start before the next patch of `a` is queued (so they are separate flushes).
      if (id === 'x2' || id === 'x4') await sleep(1);
    }
    await w.drain();
    for (let i = 0; i < 200 && acked.length < phases.length; i++) await sleep(5);
    await w.stop();
    expect(s.stats().resets).toBe(1);
    expect(s.stored.get('a')).toEqual({ status: 'succeeded', dispatchedAt: 1, startedAt: 2, exitCode: 0, finishedAt: 3 });
    // The retried writes were committed after the failure, and none of them carries an older patch of a.
    const after = s.committed.filter((c) => c.n > 1);
    expect(after.length).toBeGreaterThan(0);
    for (const c of after) if (c.updates.has('a')) expect(c.updates.get('a')!.status).toBe('succeeded');
    // Every ack ran, each once.
    expect(acked.sort()).toEqual(phases.map(([id]) => id).sort());
    for (const id of ['x1', 'x2', 'x3', 'x4', 'x5', 'x6']) expect(s.stored.get(id)).toEqual({ status: 'succeeded' });
  });

  it('keeps the output in flight under maxFlushBytes before handing over another flush', async () => {
    const s = pipelinedStore({ depth: 4, latencyMs: 10 });
    const w = writer(s.store, { maxFlushBytes: 100_000, batchBytes: 40_000 });
    const chunk = new Uint8Array(30_000);
    for (let i = 0; i < 40; i++) {
      w.output(`e${i % 5}`, i, 'stdout', chunk);
      if (i % 4 === 0) await sleep(1);
    }
    await w.drain();
    await w.stop();
    const bytes = s.committed.reduce((n, c) => n + c.rows.reduce((m, r) => m + r.data.length, 0), 0);
    expect(bytes).toBe(40 * 30_000);
    expect(s.stats().maxInFlight).toBeGreaterThan(1);
    // A flush starts only while less than maxFlushBytes is in flight; one flush takes at most about maxFlushBytes.
    expect(s.stats().maxBytesInFlight).toBeLessThan(2 * 100_000 + 30_000);
  });
});
