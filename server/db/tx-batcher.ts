import type { Knex } from 'knex';
import type { Db } from './db.js';
import { isLockConflict, retryOnConflict, txRetryOf, type RetryHooks } from './retry.js';

type Op = { fn: (trx: Knex.Transaction) => Promise<unknown>; key: string; resolve(v: unknown): void; reject(e: unknown): void };

/**
 * Group commit: writes queued in the same turn of the event loop (up to `maxBatch`) run in one
 * transaction. A reconnect storm of 20,000 agents then costs a few hundred commits instead of
 * 40,000, and callers still await their own write and get their own result or error.
 *
 * Invariant: one op failing (a constraint, say) rejects only that op; SQLite and InnoDB undo just
 * the failed statement, so the others still commit. A failed commit rejects the whole batch.
 *
 * A lock conflict (deadlock, lock wait timeout) is different: InnoDB has rolled back the whole
 * transaction, the ops before it included, so the batch is abandoned and run again as a whole
 * (the database's retry policy, see retry.ts); only when the retries are exhausted is every op of
 * the batch rejected. Ops run in the order of their `key` (an agent id: every node then locks the
 * rows of one batch in the same order, which is what keeps two batches from deadlocking), ops of
 * the same key in the order they were queued.
 */
export class TxBatcher {
  private queue: Op[] = [];
  private scheduled = false;
  private running: Promise<void> = Promise.resolve();
  /** Batches run again after a lock conflict (for tests and benchmarks). */
  conflictRetries = 0;

  constructor(
    /** The database the batches are written to (a writer of its own may go around the batches: ConnectWrites on SQLite). */
    readonly db: Db,
    private readonly maxBatch = 1000,
    private readonly hooks: RetryHooks = {},
  ) {}

  /**
   * Runs `fn` inside the next batch's transaction. `fn` must use only `trx` (never the pool):
   * on SQLite the pool has one connection, which the batch holds. It may run more than once (a
   * batch that met a lock conflict runs again), so it must not have effects outside `trx` that
   * a second run would repeat. `key`: the row it locks first (an agent id), for the lock order.
   */
  run<T>(fn: (trx: Knex.Transaction) => Promise<T>, key = ''): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, key, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          // Batches run one after another (the SQLite pool has one connection anyway).
          this.running = this.running.then(() => this.drain());
        });
      }
    });
  }

  /** Resolves once everything queued so far is written. */
  async idle(): Promise<void> {
    while (this.queue.length || this.scheduled) {
      await new Promise((r) => setImmediate(r));
      await this.running;
    }
    await this.running;
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      // Stable: ops of one key keep their order (a release before the next claim of the agent).
      const batch = this.queue.splice(0, this.maxBatch).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      let results: Array<{ ok: true; v: unknown } | { ok: false; e: unknown }> = [];
      try {
        await retryOnConflict(
          () =>
            this.db.transaction(async (trx) => {
              results = [];
              for (const op of batch) {
                try {
                  results.push({ ok: true, v: await op.fn(trx) });
                } catch (e) {
                  // The transaction is gone (the ops before this one too): run the batch again.
                  if (isLockConflict(e)) throw e;
                  results.push({ ok: false, e });
                }
              }
            }),
          txRetryOf(this.db),
          {
            ...this.hooks,
            onRetry: (err, attempt, delay) => {
              this.conflictRetries++;
              this.hooks.onRetry?.(err, attempt, delay);
            },
          },
        );
      } catch (err) {
        for (const op of batch) op.reject(err);
        continue;
      }
      batch.forEach((op, i) => {
        const r = results[i]!;
        if (r.ok) op.resolve(r.v);
        else op.reject(r.e);
      });
    }
  }
}
