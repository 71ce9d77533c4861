import type { ExecutionState, ExecutionView, Stream, TaskDetail, TaskView } from '../protocol/index.js';
import { ApiFailure, type Client } from './client.js';
import type { ConsoleSocket } from './socket.js';

export type { TaskDetail };

/** How often the task is re-read while following it (covers a dropped push or a lost socket). */
const RECHECK_MS = 5000;
/** A partial line longer than this is printed without waiting for its newline. */
const MAX_PARTIAL = 64 << 10;

const RANK: Record<ExecutionState, number> = {
  pending: 0,
  dispatched: 1,
  running: 2,
  succeeded: 3,
  failed: 3,
  timeout: 3,
  cancelled: 3,
  lost: 3,
  skipped: 3,
  policy_denied: 3,
};
const isFinal = (s: ExecutionState): boolean => RANK[s] === 3;

/** One line of output, or a change of an execution's state: what `muster exec` prints. */
export type LiveEvent = { type: 'output'; execution: ExecutionView; stream: Stream; text: string } | { type: 'execution'; execution: ExecutionView };

interface Follow {
  view: ExecutionView;
  /** Next output sequence number to print (sequence numbers count chunks of both streams). */
  expected: number;
  printedBytes: number;
  /** Serialises this execution's output handling, so a catch-up read and live chunks stay in order. */
  queue: Promise<void>;
  decoders: Record<Stream, TextDecoder>;
  partial: Record<Stream, string>;
  announcedFinal: boolean;
}

/**
 * Follows one task live over the console socket: its executions' states and output as it is
 * produced, in order and complete. Output chunks carry a per-execution sequence number; chunks
 * this socket missed (produced before the subscription took effect, or skipped while it was
 * behind: `exec.gap`) are read back from the stored output by sequence range before later ones
 * are printed. If the socket is lost, the task is followed by reading it back until it ends.
 */
export class TaskFollower {
  private readonly execs = new Map<string, Follow>();
  private task: TaskView;
  private resolveDone!: (t: TaskDetail) => void;
  private rejectDone!: (e: Error) => void;
  readonly done: Promise<TaskDetail>;
  private finished = false;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private recheck = false;
  private reconciled = false;
  private readonly offs: Array<() => void> = [];
  /** Set when the live stream was lost; the caller may say so. */
  onSocketLost: (why: string) => void = () => {};

  constructor(
    private readonly c: Client,
    private readonly sock: ConsoleSocket | null,
    created: TaskDetail,
    private readonly emit: (e: LiveEvent) => void,
  ) {
    const { executions, ...task } = created;
    this.task = task;
    for (const e of executions) this.execs.set(e.id, this.fresh(e));
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
  }

  private fresh(view: ExecutionView): Follow {
    return {
      view,
      expected: 0,
      printedBytes: 0,
      queue: Promise.resolve(),
      announcedFinal: false,
      decoders: { stdout: new TextDecoder('utf-8'), stderr: new TextDecoder('utf-8') },
      partial: { stdout: '', stderr: '' },
    };
  }

  /** Subscribes, reconciles with a fresh read of the task, and resolves `done` with the final task. */
  async start(): Promise<TaskDetail> {
    const id = this.task.id;
    if (this.sock) {
      const sock = this.sock;
      this.offs.push(
        sock.onFrame((f) => {
          if (f.op !== 'execOutput') return;
          const e = this.execs.get(f.executionId);
          if (!e) return;
          const data = f.data.slice();
          this.enqueue(e, () => this.chunk(e, f.seq, f.stream, data));
        }),
        sock.onMessage((m) => {
          if (m.type === 'execution.updated' && m.execution.taskId === id) this.update(m.execution);
          else if (m.type === 'task.updated' && m.task.id === id) {
            this.task = m.task;
            if (m.task.status !== 'running') void this.check();
          } else if (m.type === 'exec.gap') {
            const e = this.execs.get(m.executionId);
            if (e) this.enqueue(e, () => this.catchUp(e, m.toSeq));
          }
        }),
      );
      void sock.closed.then((c) => {
        if (this.finished) return;
        this.onSocketLost(`console socket closed (${c.code}${c.reason ? ` ${c.reason}` : ''})`);
        this.arm(1000);
      });
      const ack = sock.next((m) => (m.type === 'task.updated' && m.task.id === id) || (m.type === 'error' && m.ref === id));
      sock.send({ type: 'task.subscribe', taskId: id, output: true });
      const first = await ack;
      if (first.type === 'error') throw new Error(`cannot follow task ${id}: ${first.message}`);
    }
    // Anything that changed before the subscription took effect is in this read.
    await this.check();
    this.arm(this.sock ? RECHECK_MS : 1000);
    return this.done;
  }

  /** Stops following (detach): nothing more is printed. */
  stop(): void {
    this.finished = true;
    clearTimeout(this.timer);
    for (const off of this.offs.splice(0)) off();
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    if (this.finished) return;
    this.timer = setTimeout(() => void this.check().finally(() => this.arm(ms)), ms);
  }

  private enqueue(e: Follow, fn: () => Promise<void> | void): void {
    e.queue = e.queue.then(fn).catch((err: unknown) => {
      if (!this.finished) this.rejectDone(err instanceof Error ? err : new Error(String(err)));
    });
  }

  private update(v: ExecutionView): void {
    const e = this.execs.get(v.id);
    if (!e) return;
    if (RANK[v.status] < RANK[e.view.status]) return;
    if (isFinal(e.view.status) && e.announcedFinal) return;
    const changed = v.status !== e.view.status;
    e.view = v;
    // State changes go through the execution's queue, so they come after the output before them.
    if (isFinal(v.status)) {
      e.announcedFinal = true;
      this.enqueue(e, async () => {
        if (e.printedBytes < e.view.outputBytes) await this.catchUp(e);
        this.flush(e);
        this.emit({ type: 'execution', execution: e.view });
        // Not awaited: check() waits for this very queue.
        void this.check();
      });
    } else if (changed) this.enqueue(e, () => this.emit({ type: 'execution', execution: v }));
  }

  private chunk(e: Follow, seq: number, stream: Stream, data: Uint8Array): Promise<void> | void {
    if (seq < e.expected) return; // already read back from the stored output
    if (seq > e.expected) return this.catchUp(e, seq).then(() => this.print(e, stream, data, seq + 1));
    this.print(e, stream, data, seq + 1);
  }

  /**
   * Reads stored chunks [expected, toSeq) and prints them, stdout first (their interleaving within
   * the range is not kept). Without toSeq: up to what the server has received, which it names.
   */
  private async catchUp(e: Follow, toSeq?: number): Promise<void> {
    if (toSeq !== undefined && toSeq <= e.expected) return;
    const from = e.expected;
    let to = toSeq;
    for (const stream of ['stdout', 'stderr'] as const) {
      const q = new URLSearchParams({ raw: '1', stream, fromSeq: String(from) });
      if (to !== undefined) q.set('toSeq', String(to));
      const res = await this.c.request('GET', `/api/executions/${encodeURIComponent(e.view.id)}/output?${q}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const end = Number(res.headers.get('x-muster-to-seq'));
      if (Number.isInteger(end)) to = end;
      if (bytes.length) this.print(e, stream, bytes, e.expected);
    }
    if (to !== undefined) e.expected = Math.max(e.expected, to);
  }

  private print(e: Follow, stream: Stream, data: Uint8Array, next: number): void {
    e.expected = Math.max(e.expected, next);
    e.printedBytes += data.length;
    let text = e.partial[stream] + e.decoders[stream].decode(data, { stream: true });
    let nl: number;
    while ((nl = text.indexOf('\n')) >= 0) {
      this.emit({ type: 'output', execution: e.view, stream, text: text.slice(0, nl).replace(/\r$/, '') });
      text = text.slice(nl + 1);
    }
    if (text.length > MAX_PARTIAL) {
      this.emit({ type: 'output', execution: e.view, stream, text });
      text = '';
    }
    e.partial[stream] = text;
  }

  /** Prints what is left of unterminated lines (the execution is over). */
  private flush(e: Follow): void {
    for (const stream of ['stdout', 'stderr'] as const) {
      const rest = e.partial[stream] + e.decoders[stream].decode();
      e.partial[stream] = '';
      if (rest) this.emit({ type: 'output', execution: e.view, stream, text: rest });
    }
  }

  /** Reads the task back; ends the follow once it is over and every execution's output is printed. */
  private async check(): Promise<void> {
    if (this.finished) return;
    if (this.checking) {
      this.recheck = true;
      return;
    }
    this.checking = true;
    this.recheck = false;
    try {
      const t = await this.c.get<TaskDetail>(`/api/tasks/${encodeURIComponent(this.task.id)}`);
      const first = !this.reconciled;
      this.reconciled = true;
      for (const v of t.executions) {
        if (!this.execs.has(v.id)) this.execs.set(v.id, this.fresh(v));
        const e = this.execs.get(v.id)!;
        // Output produced before the subscription took effect: read it now, not when the next chunk shows the hole.
        if (first && v.outputBytes > 0 && !isFinal(v.status)) this.enqueue(e, () => this.catchUp(e));
        this.update(v);
      }
      if (t.status === 'running' || this.finished) return;
      const pending = [...this.execs.values()];
      if (!pending.every((e) => e.announcedFinal)) return;
      await Promise.all(pending.map((e) => e.queue));
      if (this.finished) return;
      this.finished = true;
      clearTimeout(this.timer);
      for (const off of this.offs.splice(0)) off();
      this.resolveDone(t);
    } catch (err) {
      // A refusal (credentials ended, task gone) is the end; anything else (the server restarting,
      // the network) is retried on the next timer, as long as there was a live stream to begin with.
      const refused = err instanceof ApiFailure && err.status >= 400 && err.status < 500;
      if (!this.sock || refused) this.rejectDone(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.checking = false;
      if (this.recheck && !this.finished) void this.check();
    }
  }
}
