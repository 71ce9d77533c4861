import fs from 'node:fs';
import { MessageChannel, parentPort, Worker, workerData, type MessagePort } from 'node:worker_threads';
import { openDb, setQueryTimeout, type DbTimeouts } from '../db/db.js';
import type { Logger } from '../log.js';
import type { ExecPatch } from './columns.js';
import { ExecRepo, type OutputRow } from './repo.js';

/**
 * The execution writer's database work on a thread of its own (MySQL/MariaDB).
 *
 * Why: a 10,000-host batch's replies arrive within a few hundred milliseconds, and the main event
 * loop reads them in the kernel's ready order. The writer's database socket becomes readable
 * behind thousands of agent sockets, so every round trip of a flush (BEGIN, each statement,
 * COMMIT) waited for the loop to get through them: a flush started during the replies made no
 * progress until they were all read (a BEGIN waited 430 ms), and the database did the whole batch's
 * writes only afterwards, while the rest of the machine idled (issue 17). On its own thread the
 * transaction's round trips are answered at once; the main loop hears once per flush that it
 * committed.
 *
 * What crosses the threads: the flush's row patches (a structured clone of the Map) and its output
 * parts, packed into one buffer that is transferred, not copied (each part may be a view into a
 * larger socket buffer: cloning a view clones its whole buffer). The thread runs the same
 * ExecRepo.storeBatch as the main thread would, on its own connection pool of the same database and
 * settings. Errors come back with the fields failures.ts classifies (code, errno, fatal, name, cause).
 * Batches of bulk output are not sent (THREAD_MAX_OUTPUT_BYTES).
 */

/** What the main thread sends: a batch, the end of a failure (reset), or the end. */
type Request =
  | { op: 'store'; id: number; meta: Array<[string, number, number, number, number]>; data: ArrayBuffer; updates: Map<string, ExecPatch> }
  | { op: 'reset' }
  | { op: 'close' };
/** What the thread answers: a batch stored or failed, or that it closed its database pool. */
type Reply = { op: 'stored'; id: number } | { op: 'failed'; id: number; error: ErrorInfo } | { op: 'closed' };

interface ErrorInfo {
  name: string;
  message: string;
  code?: unknown;
  errno?: unknown;
  sqlState?: unknown;
  sqlMessage?: unknown;
  fatal?: unknown;
  cause?: ErrorInfo;
}

/** Settings of the thread's database connection (the main thread's own, see openDb). */
export interface StoreThreadOptions {
  dbUrl: string;
  dataDir: string;
  timeouts: DbTimeouts;
  queryTimeoutMs: number;
  fenceNode?: string | undefined;
}

/** The built worker script (dist/exec-store-worker.js, next to dist/server.js); null when absent (tests on the sources). */
export function storeWorkerScript(): URL | null {
  const url = new URL('./exec-store-worker.js', import.meta.url);
  return url.protocol === 'file:' && fs.existsSync(url) ? url : null;
}

/**
 * Batches the writer may have in flight at once: the next flush is handed over while the thread
 * still writes the last one (the main loop hears of a commit late while it reads a storm of
 * replies, and must not wait for that to start the next transaction).
 */
export const STORE_PIPELINE = 4;

/**
 * A batch with more output than this is written from the main thread (on the main pool), in order
 * with the thread's: handing bulk output to the thread costs a copy into a transferable buffer
 * and, measured on this machine, 2-3 times the CPU per MB in the thread's own copies into its
 * MySQL packets (fresh memory for each), while a flood of output is not what starves the writes'
 * round trips (its flushes are few and large).
 */
export const THREAD_MAX_OUTPUT_BYTES = 256 * 1024;
/** The thread ends after this long without a batch (a server that runs no tasks does not keep it). */
export const THREAD_IDLE_MS = 60_000;

/**
 * ExecRepo.storeBatch on a worker thread, pipelined (ExecWriteBatcher's BatchStore contract):
 * batches are committed in the order given; after one fails, every batch given before `reset()`
 * fails unwritten (the thread refuses the ones it already holds, this side the ones given after),
 * so the writer can put them all back in order. A batch of bulk output goes to `inline` (the main
 * thread's ExecRepo) once every batch before it settled, and the batches after it wait for it.
 * The thread starts with the first batch it gets and ends when idle; if it dies, the batches it
 * held fail as above and the first batch after reset() starts a new one.
 */
export class ThreadedStore {
  readonly pipelined = STORE_PIPELINE;
  /** A batch failed (or the thread died): refuse batches until the writer's reset(). */
  private refusing = false;
  private worker: Worker | null = null;
  private port: MessagePort | null = null;
  private seq = 0;
  private readonly pending = new Map<number, { resolve(): void; reject(err: Error): void }>();
  private closed = false;
  /** Settles (never rejects) once the latest batch given settled: an inline batch waits for it. */
  private lastGiven: Promise<void> = Promise.resolve();
  /** The inline batch still running, if any: thread batches given after it wait for it. */
  private barrier: Promise<void> | null = null;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly script: URL,
    private readonly o: StoreThreadOptions,
    private readonly inline: Pick<ExecRepo, 'storeBatch'>,
    private readonly log: Logger,
  ) {}

  storeBatch(rows: OutputRow[], updates: ReadonlyMap<string, ExecPatch>): Promise<void> {
    if (this.closed) return Promise.reject(new Error('execution writer thread closed'));
    if (this.refusing) return Promise.reject(refused());
    let bytes = 0;
    for (const r of rows) bytes += r.data.length;
    const prev = this.lastGiven;
    const barrier = this.barrier;
    let done: Promise<void>;
    if (bytes > THREAD_MAX_OUTPUT_BYTES) {
      done = (async () => {
        await prev;
        if (this.refusing) throw refused();
        try {
          await this.inline.storeBatch(rows, updates);
        } catch (err) {
          this.refusing = true;
          throw err;
        }
      })();
      const settled = done.then(noop, noop);
      this.barrier = settled;
      void settled.then(() => {
        if (this.barrier === settled) this.barrier = null;
      });
    } else if (barrier) {
      done = barrier.then(() => (this.refusing ? Promise.reject(refused()) : this.post(rows, updates)));
    } else done = this.post(rows, updates);
    this.lastGiven = done.then(noop, noop);
    return done;
  }

  private post(rows: OutputRow[], updates: ReadonlyMap<string, ExecPatch>): Promise<void> {
    const port = this.port ?? this.spawn();
    clearTimeout(this.idleTimer);
    const { meta, data } = pack(rows);
    const id = ++this.seq;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const msg: Request = { op: 'store', id, meta, data, updates: updates as Map<string, ExecPatch> };
      port.postMessage(msg, [data]);
    });
  }

  /** The writer put every failed batch back: accept batches again. */
  reset(): void {
    this.refusing = false;
    this.port?.postMessage({ op: 'reset' } satisfies Request);
  }

  /** Closes the thread's database pool and ends the thread (after the writer stopped). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idleTimer);
    await this.lastGiven;
    await this.retire();
  }

  /** Ends the thread (idle, or closing): it closes its pool first; batches given later start a new one. */
  private async retire(): Promise<void> {
    const w = this.worker;
    const port = this.port;
    if (!w || !port || this.pending.size) return;
    this.worker = null;
    this.port = null;
    const done = new Promise<void>((resolve) => {
      port.on('message', (m: Reply) => m.op === 'closed' && resolve());
      w.once('exit', () => resolve());
    });
    port.postMessage({ op: 'close' } satisfies Request);
    const timer = setTimeout(() => void w.terminate(), 5000);
    timer.unref();
    await done;
    clearTimeout(timer);
    await w.terminate();
    port.close();
  }

  private spawn(): MessagePort {
    const { port1, port2 } = new MessageChannel();
    const w = new Worker(this.script, {
      workerData: { options: this.o, port: port2 },
      transferList: [port2],
      // Its own bounded heap: it holds at most STORE_PIPELINE flushes of small output.
      resourceLimits: { maxOldGenerationSizeMb: 256 },
    });
    this.worker = w;
    this.port = port1;
    port1.on('message', (m: Reply) => this.reply(m));
    w.on('error', (err) => this.log.error({ err }, 'execution writer thread failed'));
    w.once('exit', (code) => {
      if (this.worker !== w) return;
      this.worker = null;
      this.port = null;
      port1.close();
      const err = new Error(`execution writer thread exited (code ${code})`);
      if (this.pending.size) this.refusing = true;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      if (!this.closed) this.log.warn({ code }, 'execution writer thread exited; a new one starts with the next write');
    });
    // The thread must not keep the process alive by itself (the writer's stop() closes it).
    w.unref();
    port1.unref();
    return port1;
  }

  private reply(m: Reply): void {
    if (m.op === 'closed') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.op === 'stored') p.resolve();
    else {
      this.refusing = true;
      p.reject(revive(m.error));
    }
    if (this.pending.size === 0) {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => void this.retire(), THREAD_IDLE_MS);
      this.idleTimer.unref();
    }
  }
}

const noop = (): void => {};
const refused = (): Error => new Error('an earlier execution write failed; not written');

/** Output parts as [execution id, seq, part, stream, byte length] and their bytes in one transferable buffer. */
function pack(rows: OutputRow[]): { meta: Array<[string, number, number, number, number]>; data: ArrayBuffer } {
  let total = 0;
  for (const r of rows) total += r.data.length;
  const buf = new Uint8Array(new ArrayBuffer(total));
  const meta = new Array<[string, number, number, number, number]>(rows.length);
  let at = 0;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    buf.set(r.data, at);
    at += r.data.length;
    meta[i] = [r.execution_id, r.seq, r.part, r.stream, r.data.length];
  }
  return { meta, data: buf.buffer };
}

function unpack(meta: Array<[string, number, number, number, number]>, data: ArrayBuffer): OutputRow[] {
  const rows = new Array<OutputRow>(meta.length);
  let at = 0;
  for (let i = 0; i < meta.length; i++) {
    const [execution_id, seq, part, stream, len] = meta[i]!;
    rows[i] = { execution_id, seq, part, stream, data: Buffer.from(data, at, len) };
    at += len;
  }
  return rows;
}

function describe(err: unknown, depth = 0): ErrorInfo {
  const e = (err ?? {}) as Record<string, unknown>;
  const info: ErrorInfo = {
    name: typeof e['name'] === 'string' ? e['name'] : 'Error',
    message: typeof e['message'] === 'string' ? e['message'] : String(err),
  };
  for (const k of ['code', 'errno', 'sqlState', 'sqlMessage', 'fatal'] as const) {
    const v = e[k];
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') info[k] = v;
  }
  if (e['cause'] && depth < 3) info.cause = describe(e['cause'], depth + 1);
  return info;
}

function revive(info: ErrorInfo): Error {
  const err = Object.assign(new Error(info.message, info.cause ? { cause: revive(info.cause) } : undefined), {
    code: info.code,
    errno: info.errno,
    sqlState: info.sqlState,
    sqlMessage: info.sqlMessage,
    fatal: info.fatal,
  });
  err.name = info.name;
  return err;
}

/** The thread's side: stores each batch it is sent with ExecRepo.storeBatch, in order. */
export function serveStore(): void {
  const { options: o, port } = workerData as { options: StoreThreadOptions; port: MessagePort };
  if (!parentPort || !port) throw new Error('serveStore runs in the execution writer thread only');
  const { db, dialect } = openDb(o.dbUrl, o.dataDir, o.timeouts);
  setQueryTimeout(db, o.queryTimeoutMs);
  const repo = new ExecRepo(db, dialect, o.fenceNode);
  let chain = Promise.resolve();
  // After a failure the batches already sent are refused until the writer has put them back.
  let refusing = false;
  port.on('message', (m: Request) => {
    if (m.op === 'reset') {
      chain = chain.then(() => void (refusing = false));
      return;
    }
    if (m.op === 'close') {
      chain = chain.then(async () => {
        await db.destroy().catch(() => {});
        port.postMessage({ op: 'closed' } satisfies Reply);
        port.close();
      });
      return;
    }
    chain = chain.then(async () => {
      if (refusing) {
        port.postMessage({ op: 'failed', id: m.id, error: { name: 'Error', message: 'an earlier execution write failed; not written' } } satisfies Reply);
        return;
      }
      try {
        await repo.storeBatch(unpack(m.meta, m.data), m.updates);
        port.postMessage({ op: 'stored', id: m.id } satisfies Reply);
      } catch (err) {
        refusing = true;
        port.postMessage({ op: 'failed', id: m.id, error: describe(err) } satisfies Reply);
      }
    });
  });
}
