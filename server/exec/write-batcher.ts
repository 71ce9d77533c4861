import type { Logger } from '../log.js';
import type { ExecPatch, ExecRepo, OutputRow } from './repo.js';

/**
 * Where the batches go: ExecRepo itself (one transaction at a time), or a store that takes several
 * in order (`pipelined`: the execution writer's thread). A pipelined store commits batches in the
 * order given and, once one failed, commits none given after it until `reset()`: the writer puts
 * every batch not committed back in order and calls reset() before it tries again, so a retried
 * batch never overwrites a newer one's row patches.
 */
export type BatchStore = Pick<ExecRepo, 'storeBatch'> & { readonly pipelined?: number; reset?(): void };

/** One flush handed to the store, in flight until its outcome is handled (in order). */
interface Flight {
  rows: OutputRow[];
  bytes: number;
  updates: Map<string, ExecPatch>;
  callbacks: Array<() => void>;
  late: Array<() => void>;
  /** Resolves once this flight's outcome is handled. */
  landed?: Promise<void>;
}

/** Largest BLOB part stored in one row (MySQL BLOB holds 65,535 bytes). */
const PART_BYTES = 60_000;
/** A queued chunk keeps the buffer it was read into when that buffer is at most this many times its size. */
const PIN_RATIO = 2.5;
/** Late after-flush callbacks (acknowledgements to agents) run per turn of the event loop. */
const LATE_SLICE = 512;

/**
 * Batches the hot writes of executions: output chunks (multi-row inserts) and execution row
 * updates (merged per execution), flushed together in one transaction every `intervalMs` or when
 * `batchBytes` of output is waiting. Callbacks passed to `afterFlush` run once everything queued
 * before them is committed (the server acks a result to its agent only then).
 *
 * Memory stays bounded: above `highWaterBytes` of queued output, `onPressure(true)` asks the
 * socket layer to stop reading from agents; it is released below half of it, and never while
 * writes are failing. One transaction takes at most `maxFlushBytes`, and another starts only while
 * less than that is in flight (a pipelined store takes several: BatchStore), so queued + in-flight
 * output stays under highWaterBytes + 2 × maxFlushBytes (plus what the paused sockets had read); a
 * queued chunk keeps at most PIN_RATIO times its size alive (the buffer it was read into).
 *
 * A failed write (the database away) puts everything back in order and is retried after
 * `retryInitialMs`, doubling up to `retryMaxMs`; nothing else starts a flush meanwhile, so an
 * outage costs a handful of attempts, and one log line when it starts and one when it ends.
 */
export class ExecWriteBatcher {
  private rows: OutputRow[] = [];
  private bytes = 0;
  private updates = new Map<string, ExecPatch>();
  /**
   * Deferred row updates (`update(…, true)`: an execution's progress before its result), with the
   * time each is due, oldest first. A later update of the same execution takes its deferred patch
   * along, so an execution dispatched, started and finished within `deferMs` has its row written
   * once instead of two or three times (a 10,000-host batch: one pass over the rows, not three).
   */
  private deferred = new Map<string, { patch: ExecPatch; due: number }>();
  private deferTimer: NodeJS.Timeout | undefined;
  private callbacks: Array<() => void> = [];
  /** `afterFlush(fn, true)`: run after the flush's other callbacks, LATE_SLICE per turn of the loop. */
  private late: Array<() => void> = [];
  /** Late callbacks still being run, in flush order (stop() waits for them). */
  private lateRun: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  /** Flights handed to the store and not yet handled, oldest first; their output bytes. */
  private flights: Flight[] = [];
  private flightBytes = 0;
  /** Resolves once the newest flight is handled (and every earlier one: they are handled in order). */
  private tail: Promise<void> = Promise.resolve();
  private again: Promise<void> | null = null;
  /** Flights that failed (and every one after a failure), put back in order once none is in flight. */
  private failed: Flight[] = [];
  private failErr: unknown = null;
  private isPressured = false;
  private stopped = false;
  /** Set while writes fail: since when, how many attempts, the retry timer. */
  private failing: { since: number; attempts: number; timer: NodeJS.Timeout | undefined } | null = null;
  /** drainUnlessDegraded() callers, answered false when writes start failing. */
  private readonly failWaiters = new Set<(ok: boolean) => void>();
  /** Output bytes and rows committed so far (for metrics and benchmarks). */
  committedBytes = 0;
  committedRows = 0;

  constructor(
    private readonly repo: BatchStore,
    private readonly log: Logger,
    private readonly o: {
      intervalMs: number;
      batchBytes: number;
      highWaterBytes: number;
      maxFlushBytes: number;
      onPressure(on: boolean): void;
      retryInitialMs: number;
      retryMaxMs: number;
      /** Queued row updates at which a flush starts without waiting for `intervalMs`. */
      batchUpdates?: number;
      /** How long a deferred row update may wait for the execution's next one (0: not deferred). */
      deferMs?: number;
      /** Told when writes start failing and when they succeed again (database health). */
      onHealth?(ok: boolean, err?: unknown): void;
    },
  ) {}

  /** Whether batched writes are failing now (the database is away). */
  get degraded(): boolean {
    return this.failing !== null;
  }

  /** Queues one output chunk (split into BLOB-sized parts). */
  output(executionId: string, seq: number, stream: 'stdout' | 'stderr', data: Uint8Array): void {
    // The chunk is a view into the buffer the socket read (Node never reuses one), or one ws made for
    // a frame cut by two reads. Kept as it is when it is most of that buffer: copying every chunk
    // doubled the Buffer memory an output flood allocates (garbage until the next GC). Copied when
    // the buffer is much larger (a small chunk must not keep a whole read alive while it is queued).
    const own = data.buffer.byteLength <= PIN_RATIO * data.byteLength;
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const s = stream === 'stdout' ? 1 : 2;
    for (let off = 0, part = 0; off < buf.length || part === 0; off += PART_BYTES, part++) {
      const piece = buf.subarray(off, off + PART_BYTES);
      this.rows.push({ execution_id: executionId, seq, part, stream: s, data: own ? piece : Buffer.from(piece) });
      if (off + PART_BYTES >= buf.length) break;
    }
    this.bytes += buf.length;
    if (!this.isPressured && this.bytes > this.o.highWaterBytes) {
      this.isPressured = true;
      this.o.onPressure(true);
    }
    // While a flush runs, its end starts the next one; while writes fail, the retry timer does:
    // no new attempt per chunk.
    if (this.bytes >= this.o.batchBytes) {
      if (this.canFly() && !this.failing) void this.flush();
    } else this.schedule();
  }

  /**
   * Queues a row update of one execution (merged with earlier unflushed ones). `defer`: progress
   * that a restart or takeover does not need at once (dispatched, running, byte counts: a restored
   * execution is reconciled with its agent and its stored chunks either way); it is written within
   * `deferMs`, or with the execution's next non-deferred update, whichever comes first.
   */
  update(executionId: string, patch: ExecPatch, defer = false): void {
    const cur = this.updates.get(executionId);
    if (cur) {
      this.updates.set(executionId, { ...cur, ...patch });
      return this.schedule();
    }
    const held = this.deferred.get(executionId);
    if (defer && (this.o.deferMs ?? 0) > 0 && !this.stopped) {
      if (held) held.patch = { ...held.patch, ...patch };
      else {
        this.deferred.set(executionId, { patch, due: Date.now() + this.o.deferMs! });
        this.scheduleDeferred();
      }
      return;
    }
    if (held) this.deferred.delete(executionId);
    this.updates.set(executionId, held ? { ...held.patch, ...patch } : patch);
    // Many results at once (a large batch's replies, read in one long turn of the event loop,
    // where the interval timer does not fire): written while the rest are read, not after.
    if (this.updates.size >= (this.o.batchUpdates ?? Infinity)) {
      if (this.canFly() && !this.failing) void this.flush();
    } else this.schedule();
  }

  /**
   * Runs `fn` once everything queued so far is committed. `late`: after the flush's other
   * callbacks, a slice of LATE_SLICE per turn of the event loop. For acknowledgements to agents:
   * a 10,000-host batch's results commit in one flush, and sending 10,000 acks at once held the
   * loop for 150–200 ms ahead of the task's own completion write and of every other socket.
   */
  afterFlush(fn: () => void, late = false): void {
    (late ? this.late : this.callbacks).push(fn);
    this.schedule();
  }

  /** Resolves when everything queued so far is committed. */
  drain(): Promise<void> {
    return new Promise((r) => this.afterFlush(r));
  }

  /**
   * drain() for a request that must not wait out a database outage: true once everything queued
   * so far is committed, false at once when writes are failing (now or as soon as they start).
   */
  drainUnlessDegraded(): Promise<boolean> {
    if (this.failing) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        this.failWaiters.delete(done);
        resolve(ok);
      };
      this.failWaiters.add(done);
      this.afterFlush(() => done(true));
    });
  }

  private releasePressure(): void {
    if (this.isPressured && !this.failing && this.bytes < this.o.highWaterBytes / 2) {
      this.isPressured = false;
      this.o.onPressure(false);
    }
  }

  /** True while queued output is above the high-water mark (agents should not be read). */
  get pressured(): boolean {
    return this.isPressured;
  }

  queuedBytes(): number {
    return this.bytes;
  }

  /** A flush when the oldest deferred update is due. */
  private scheduleDeferred(): void {
    if (this.deferTimer || this.stopped || this.failing) return;
    const first = this.deferred.values().next();
    if (first.done) return;
    this.deferTimer = setTimeout(
      () => {
        this.deferTimer = undefined;
        if (!this.failing) void this.flush(); // while writes fail, only the retry timer tries
      },
      Math.max(0, first.value.due - Date.now()),
    );
  }

  /** Moves the deferred updates that are due (all of them with `all`) to the queued ones. */
  private takeDue(all: boolean): void {
    if (!this.deferred.size) return;
    // Due within the coming interval: written now rather than a flush later.
    const limit = Date.now() + this.o.intervalMs;
    for (const [id, d] of this.deferred) {
      if (!all && d.due > limit) break; // oldest first: the rest are due later
      this.deferred.delete(id);
      this.updates.set(id, d.patch); // not in `updates` (update() moves a held patch there)
    }
  }

  private schedule(): void {
    if (this.timer || this.stopped || this.failing) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.o.intervalMs);
  }

  /** How many flights the store takes at once (1: ExecRepo, one transaction after the other). */
  private get maxFlights(): number {
    return Math.max(1, this.repo.pipelined ?? 1);
  }

  /**
   * Whether another flight may start now: below the store's depth, nothing failed and unhandled,
   * and less than `maxFlushBytes` of output in flight (so queued + in-flight output stays under
   * highWaterBytes + 2 × maxFlushBytes however deep the store's pipeline).
   */
  private canFly(): boolean {
    return this.flights.length < this.maxFlights && this.failed.length === 0 && (this.flights.length === 0 || this.flightBytes < this.o.maxFlushBytes);
  }

  async flush(): Promise<void> {
    // One follow-up flush at most, however many callers ask while the store is busy (a flood of
    // output must not pile up a promise per chunk).
    if (!this.canFly()) {
      return (this.again ??= this.oldest().then(() => {
        this.again = null;
        return this.flush();
      }));
    }
    this.takeDue(this.stopped);
    if (!this.rows.length && !this.updates.size && !this.callbacks.length && !this.late.length) {
      this.scheduleDeferred();
      return this.tail; // what is in flight is committed (or put back) once this resolves
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.failing) {
      clearTimeout(this.failing.timer);
      this.failing.timer = undefined;
    }
    // Take at most maxFlushBytes of output per transaction; what stays queued keeps its order.
    let take = this.rows.length;
    let bytes = this.bytes;
    if (this.bytes > this.o.maxFlushBytes) {
      let sum = 0;
      take = 0;
      while (take < this.rows.length && sum < this.o.maxFlushBytes) sum += this.rows[take++]!.data.length;
      bytes = sum;
    }
    const rows = this.rows.slice(0, take);
    this.rows = this.rows.slice(take);
    this.bytes -= bytes;
    const updates = this.updates;
    this.updates = new Map();
    // Callbacks wait for everything queued before them: only when no output stays behind.
    const callbacks = this.rows.length === 0 ? this.callbacks : [];
    const late = this.rows.length === 0 ? this.late : [];
    if (this.rows.length === 0) {
      this.callbacks = [];
      this.late = [];
    }
    // The taken rows are the database's now: let agents send again while it writes them.
    this.releasePressure();
    const flight: Flight = { rows, bytes, updates, callbacks, late };
    this.flights.push(flight);
    this.flightBytes += bytes;
    const stored = this.repo.storeBatch(rows, updates).then(
      () => null,
      (err: unknown) => ({ err }),
    );
    // Outcomes are handled in the order the flights started (a pipelined store answers in order too).
    const prev = this.tail;
    this.tail = flight.landed = (async () => {
      const outcome = await stored;
      await prev;
      try {
        this.land(flight, outcome);
      } catch (err) {
        this.log.error({ err }, 'execution writer: handling a write failed');
      }
    })();
    return this.tail;
  }

  /** Resolves when the oldest flight has been handled (all of them while failed ones wait to be put back). */
  private oldest(): Promise<void> {
    return (this.failed.length ? this.tail : this.flights[0]?.landed) ?? Promise.resolve();
  }

  /** Handles a flight's outcome: committed (callbacks run) or failed (put back once nothing is in flight). */
  private land(flight: Flight, outcome: { err: unknown } | null): void {
    this.flights.shift();
    this.flightBytes -= flight.bytes;
    // A flight after a failed one was not committed either (a pipelined store refuses it).
    if (outcome || this.failed.length) {
      this.failed.push(flight);
      if (outcome && this.failErr === null) this.failErr = outcome.err;
      if (this.flights.length === 0) this.putBack();
      return;
    }
    this.committedBytes += flight.bytes;
    this.committedRows += flight.rows.length;
    if (this.failing && this.flights.length === 0) {
      const f = this.failing;
      this.failing = null;
      this.log.info({ attempts: f.attempts, downMs: Date.now() - f.since, queuedBytes: this.bytes }, 'execution writes recovered');
      this.o.onHealth?.(true);
    }
    this.releasePressure();
    for (const cb of flight.callbacks) this.run(cb);
    if (flight.late.length) this.runLate(flight.late);
    if (this.failing) return; // an earlier failure's retry timer is the next attempt
    if (this.bytes >= this.o.batchBytes || this.updates.size >= (this.o.batchUpdates ?? Infinity)) {
      if (this.canFly()) void this.flush();
    } else if (this.rows.length || this.updates.size || this.callbacks.length || this.late.length) this.schedule();
    this.scheduleDeferred();
  }

  /**
   * Database away: everything of the failed flights goes back in order, ahead of what was queued
   * meanwhile, and is retried with backoff; nothing is acked before it is stored.
   */
  private putBack(): void {
    const failed = this.failed;
    const err = this.failErr;
    this.failed = [];
    this.failErr = null;
    this.repo.reset?.();
    let rows: OutputRow[] = [];
    let bytes = 0;
    const updates = new Map<string, ExecPatch>();
    let callbacks: Array<() => void> = [];
    let late: Array<() => void> = [];
    for (const f of failed) {
      rows = rows.concat(f.rows);
      bytes += f.bytes;
      for (const [id, p] of f.updates) {
        const cur = updates.get(id);
        updates.set(id, cur ? { ...cur, ...p } : p);
      }
      callbacks = callbacks.concat(f.callbacks);
      late = late.concat(f.late);
    }
    this.rows = rows.concat(this.rows);
    this.bytes += bytes;
    for (const [id, p] of this.updates) updates.set(id, { ...(updates.get(id) ?? {}), ...p });
    // Deferred meanwhile (its earlier patch was in flight): it follows the patch put back.
    for (const [id, d] of this.deferred) {
      const cur = updates.get(id);
      if (!cur) continue;
      updates.set(id, { ...cur, ...d.patch });
      this.deferred.delete(id);
    }
    this.updates = updates;
    this.callbacks = callbacks.concat(this.callbacks);
    this.late = late.concat(this.late);
    const f = (this.failing ??= { since: Date.now(), attempts: 0, timer: undefined });
    f.attempts++;
    const delay = Math.min(this.o.retryMaxMs, this.o.retryInitialMs * 2 ** Math.min(f.attempts - 1, 20));
    if (f.attempts === 1) {
      this.log.warn({ err, queuedBytes: this.bytes, retryMaxMs: this.o.retryMaxMs }, 'execution writes failing; retrying with backoff');
      this.o.onHealth?.(false, err);
      for (const w of [...this.failWaiters]) w(false);
    } else {
      this.log.debug({ err, attempt: f.attempts, delay }, 'execution write retry failed');
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    clearTimeout(f.timer);
    if (!this.stopped) {
      f.timer = setTimeout(() => {
        f.timer = undefined;
        void this.flush();
      }, delay);
      f.timer.unref();
    }
  }

  private run(cb: () => void): void {
    try {
      cb();
    } catch (err) {
      this.log.error({ err }, 'after-flush callback failed');
    }
  }

  /** Runs late callbacks from the next turn of the event loop on, LATE_SLICE per turn, after earlier flushes' ones. */
  private runLate(list: Array<() => void>): void {
    this.lateRun = this.lateRun.then(
      () =>
        new Promise<void>((resolve) => {
          let i = 0;
          const slice = () => {
            for (const end = Math.min(list.length, i + LATE_SLICE); i < end; i++) this.run(list[i]!);
            if (i < list.length) setImmediate(slice);
            else resolve();
          };
          setImmediate(slice);
        }),
    );
  }

  /** Flushes what is queued, stops the timer, and resolves once the late callbacks have run. */
  async stop(): Promise<void> {
    this.takeDue(true);
    await this.flush();
    this.stopped = true;
    // Deferred while that flush ran: written now (update() defers nothing once stopped).
    if (this.deferred.size) {
      this.takeDue(true);
      await this.flush();
    }
    clearTimeout(this.timer);
    clearTimeout(this.deferTimer);
    clearTimeout(this.failing?.timer);
    await this.lateRun; // the acks of what was committed go out before the sockets close
  }
}
