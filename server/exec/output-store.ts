import type { Logger } from '../log.js';
import { patchToRow, type ExecPatch, type ExecRepo } from './repository.js';

/** Largest BLOB part stored in one row (MySQL BLOB holds 65,535 bytes). */
const PART_BYTES = 60_000;

interface OutRow { execution_id: string; seq: number; part: number; stream: number; data: Buffer }

/**
 * Batches the hot writes of executions: output chunks (multi-row inserts) and execution row
 * updates (merged per execution), flushed together in one transaction every `intervalMs` or when
 * `batchBytes` of output is waiting. Callbacks passed to `afterFlush` run once everything queued
 * before them is committed (the server acks a result to its agent only then).
 *
 * Memory stays bounded: above `highWaterBytes` of queued output, `onPressure(true)` asks the
 * socket layer to stop reading from agents; it is released below half of it.
 */
export class ExecWriter {
  private rows: OutRow[] = [];
  private bytes = 0;
  private updates = new Map<string, ExecPatch>();
  private callbacks: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | null = null;
  private isPressured = false;
  private stopped = false;
  /** Output bytes and rows committed so far (for metrics and benchmarks). */
  committedBytes = 0;
  committedRows = 0;

  constructor(private readonly repo: ExecRepo, private readonly log: Logger, private readonly o: {
    intervalMs: number; batchBytes: number; highWaterBytes: number; onPressure(on: boolean): void;
  }) {}

  /** Queues one output chunk (split into BLOB-sized parts). */
  output(executionId: string, seq: number, stream: 'stdout' | 'stderr', data: Uint8Array): void {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const s = stream === 'stdout' ? 1 : 2;
    // Copy: the frame's buffer belongs to the socket and may be reused.
    for (let off = 0, part = 0; off < buf.length || part === 0; off += PART_BYTES, part++) {
      this.rows.push({ execution_id: executionId, seq, part, stream: s, data: Buffer.from(buf.subarray(off, off + PART_BYTES)) });
      if (off + PART_BYTES >= buf.length) break;
    }
    this.bytes += buf.length;
    if (!this.isPressured && this.bytes > this.o.highWaterBytes) {
      this.isPressured = true;
      this.o.onPressure(true);
    }
    if (this.bytes >= this.o.batchBytes) void this.flush();
    else this.schedule();
  }

  /** Queues a row update of one execution (merged with earlier unflushed ones). */
  update(executionId: string, patch: ExecPatch): void {
    const cur = this.updates.get(executionId);
    this.updates.set(executionId, cur ? { ...cur, ...patch } : patch);
    this.schedule();
  }

  /** Runs `fn` once everything queued so far is committed. */
  afterFlush(fn: () => void): void {
    this.callbacks.push(fn);
    this.schedule();
  }

  /** Resolves when everything queued so far is committed. */
  drain(): Promise<void> {
    return new Promise((r) => this.afterFlush(r));
  }

  /** True while queued output is above the high-water mark (agents should not be read). */
  get pressured(): boolean {
    return this.isPressured;
  }

  queuedBytes(): number {
    return this.bytes;
  }

  private schedule(): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.o.intervalMs);
  }

  async flush(): Promise<void> {
    if (this.flushing) {
      await this.flushing;
      if (this.rows.length || this.updates.size || this.callbacks.length) return this.flush();
      return;
    }
    if (!this.rows.length && !this.updates.size && !this.callbacks.length) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    const rows = this.rows;
    const bytes = this.bytes;
    const updates = this.updates;
    const callbacks = this.callbacks;
    this.rows = [];
    this.bytes = 0;
    this.updates = new Map();
    this.callbacks = [];
    this.flushing = (async () => {
      try {
        await this.repo.db.transaction(async (trx) => {
          // Keep each multi-row insert under a few MiB (max_allowed_packet, SQLite variable limits).
          let batch: OutRow[] = [];
          let size = 0;
          for (const r of rows) {
            batch.push(r);
            size += r.data.length;
            if (batch.length >= 200 || size >= 4 << 20) {
              await trx('execution_output').insert(batch).onConflict(['execution_id', 'seq', 'part']).ignore();
              batch = [];
              size = 0;
            }
          }
          if (batch.length) await trx('execution_output').insert(batch).onConflict(['execution_id', 'seq', 'part']).ignore();
          // Identical patches (a wave of dispatches) share one statement.
          const groups = new Map<string, string[]>();
          for (const [id, p] of updates) {
            const key = JSON.stringify(patchToRow(p));
            const g = groups.get(key);
            if (g) g.push(id);
            else groups.set(key, [id]);
          }
          for (const [key, ids] of groups) {
            const row = JSON.parse(key) as Record<string, unknown>;
            for (let i = 0; i < ids.length; i += 500) await trx('executions').whereIn('id', ids.slice(i, i + 500)).update(row);
          }
        });
        this.committedBytes += bytes;
        this.committedRows += rows.length;
      } catch (err) {
        // Database away: put everything back and retry; nothing is acked before it is stored.
        this.log.warn({ err: String(err) }, 'execution write failed; will retry');
        this.rows = rows.concat(this.rows);
        this.bytes += bytes;
        for (const [id, p] of this.updates) updates.set(id, { ...(updates.get(id) ?? {}), ...p });
        this.updates = updates;
        this.callbacks = callbacks.concat(this.callbacks);
        this.flushing = null;
        if (!this.stopped) setTimeout(() => void this.flush(), 500).unref();
        return;
      }
      this.flushing = null;
      if (this.isPressured && this.bytes < this.o.highWaterBytes / 2) {
        this.isPressured = false;
        this.o.onPressure(false);
      }
      for (const cb of callbacks) {
        try {
          cb();
        } catch (err) {
          this.log.error({ err }, 'after-flush callback failed');
        }
      }
      if (this.bytes >= this.o.batchBytes) void this.flush();
      else if (this.rows.length || this.updates.size || this.callbacks.length) this.schedule();
    })();
    return this.flushing;
  }

  /** Flushes what is queued and stops the timer. */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
