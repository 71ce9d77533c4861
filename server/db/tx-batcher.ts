import type { Knex } from 'knex';
import type { Db } from './db.js';

type Op = { fn: (trx: Knex.Transaction) => Promise<unknown>; resolve(v: unknown): void; reject(e: unknown): void };

/**
 * Group commit: writes queued in the same turn of the event loop (up to `maxBatch`) run in one
 * transaction. A reconnect storm of 20,000 agents then costs a few hundred commits instead of
 * 40,000, and callers still await their own write and get their own result or error.
 *
 * Invariant: one op failing (a constraint, say) rejects only that op; SQLite and InnoDB undo just
 * the failed statement, so the others still commit. A failed commit rejects the whole batch.
 */
export class TxBatcher {
  private queue: Op[] = [];
  private scheduled = false;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly maxBatch = 1000,
  ) {}

  /**
   * Runs `fn` inside the next batch's transaction. `fn` must use only `trx` (never the pool):
   * on SQLite the pool has one connection, which the batch holds.
   */
  run<T>(fn: (trx: Knex.Transaction) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
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
      const batch = this.queue.splice(0, this.maxBatch);
      const results: Array<{ ok: true; v: unknown } | { ok: false; e: unknown }> = [];
      try {
        await this.db.transaction(async (trx) => {
          for (const op of batch) {
            try {
              results.push({ ok: true, v: await op.fn(trx) });
            } catch (e) {
              results.push({ ok: false, e });
            }
          }
        });
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
