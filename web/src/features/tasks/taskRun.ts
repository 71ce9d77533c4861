/**
 * One task followed live: subscribes over the console socket (`task.subscribe`), loads the task
 * with its executions, applies `execution.updated` in batches (one publish per animation frame),
 * and keeps each execution's live output (EXEC_OUTPUT frames) so an expanded row can show it.
 *
 * Output kept here is bounded (per execution and in total); what is not kept is fetched from
 * GET /api/executions/:id/output when a row is opened.
 */
import { shallowRef } from 'vue';
import type { ExecutionView, TaskDetail, TaskView } from '../../../../protocol/rest';
import { api } from '../../api/client';
import { coalesced, frameBatcher } from '../../composables/batch';
import { onFrame, onMessage, onReady, send } from '../../composables/socket';

const PER_EXEC_BYTES = 1 << 20;
const TOTAL_BYTES = 64 << 20;

interface OutBuf {
  chunks: Array<{ stream: 'stdout' | 'stderr'; data: Uint8Array }>;
  bytes: number;
  fromStart: boolean;
  overflow: boolean;
  gap: boolean;
}
/** stderr is shown in red (SGR 31 … 39: the foreground only, so the script's own styles survive). */
const STDERR_ON = '\x1b[31m';
const STDERR_OFF = '\x1b[39m';
/** `seq` is the chunk's (absent for notes the console writes itself, such as a gap). */
type Listener = (d: Uint8Array, stream: 'stdout' | 'stderr', seq?: number) => void;
/** Live chunks (seq, size) not yet counted by a known `outputBytes`; `from` is the first seq it does not count. */
interface LiveCount {
  from: number;
  seqs: number[];
  sizes: number[];
  bytes: number;
  /** Older chunks summed into one (bounded memory while a long stream runs without an update). */
  folded: { lastSeq: number; bytes: number };
}
/** Live chunks kept one by one per execution before the oldest half is folded into a sum. */
const LIVE_COUNT_CHUNKS = 4096;

/** How far along an execution is: `lost` can still become a reported result, the other final states never change. */
function progress(s: ExecutionView['status']): number {
  switch (s) {
    case 'pending':
      return 0;
    case 'dispatched':
      return 1;
    case 'running':
      return 2;
    case 'lost':
      return 3;
    default:
      return 4;
  }
}

export class TaskRun {
  readonly task = shallowRef<TaskView | null>(null);
  readonly version = shallowRef(0);
  readonly error = shallowRef('');
  readonly loaded = shallowRef(false);
  /** A Retry's load is in flight. */
  readonly retrying = shallowRef(false);
  readonly execs = new Map<string, ExecutionView>();
  private readonly out = new Map<string, OutBuf>();
  private readonly listeners = new Map<string, Set<Listener>>();
  /**
   * Output chunks received live that the execution's last known `outputBytes` may not count yet
   * (shown as a live count). Kept by seq: an `execution.updated` can overtake the bulk output frames
   * it already counts (interactive frames go first), so only chunks at or past its `outputSeq` add.
   */
  private readonly liveBytes = new Map<string, LiveCount>();
  /** Bumped at most every BYTES_EVERY_MS while output flows (the byte counts re-render on it). */
  readonly bytesVersion = shallowRef(0);
  /** Live byte counts are published at most twice a second. */
  private readonly bytesPublish = coalesced(() => this.bytesVersion.value++, 500);
  private totalBytes = 0;
  /** Publishes the batch of changes (bumps `version`) once per animation frame. */
  private readonly publish = frameBatcher(() => this.version.value++);
  private readonly unsubs: Array<() => void> = [];
  private disposed = false;

  constructor(readonly taskId: string) {
    this.unsubs.push(
      onReady(() => void this.resync()),
      onMessage('task.updated', (m) => {
        if (m.task.id !== this.taskId) return;
        this.task.value = m.task;
        this.pushed = m.task;
        this.reconcileSoon();
      }),
      onMessage('execution.updated', (m) => {
        if (m.execution.taskId !== this.taskId) return;
        if (this.reloading) this.pushedExecs.set(m.execution.id, m.execution);
        this.execs.set(m.execution.id, m.execution);
        this.countedUpTo(m.execution);
        this.touch();
      }),
      onMessage('exec.gap', (m) => {
        // The server skipped chunks for this console (it fell behind): say so where the output shows.
        const b = this.out.get(m.executionId);
        if (b) b.gap = true;
        const note = new TextEncoder().encode(
          `\r\n\x1b[33m[${m.toSeq - m.fromSeq} ${m.stream} chunk(s) skipped: this console fell behind; Download has the full output]\x1b[0m\r\n`,
        );
        const ls = this.listeners.get(m.executionId);
        if (ls) for (const l of ls) l(note, 'stdout');
      }),
      onFrame((f) => {
        if (f.op !== 'execOutput') return;
        const known = this.execs.get(f.executionId);
        if (!known && this.loaded.value) return; // another task's output
        this.append(f.executionId, f.seq, f.stream, f.data);
      }),
    );
  }

  private reconcileTimer: ReturnType<typeof setTimeout> | null = null;
  /** The latest task pushed over the socket (newer than a snapshot that raced with it). */
  private pushed: TaskView | null = null;
  /**
   * Executions pushed while a snapshot is in flight: the snapshot may have been read before them,
   * so after it lands each is kept where it is further along than the snapshot's row (else a change
   * that raced the snapshot, e.g. `dispatched → running`, would be lost until the next one).
   */
  private readonly pushedExecs = new Map<string, ExecutionView>();
  private reloading = false;

  /**
   * The task's counts are the server's truth. Subscribing is asynchronous on the server, so an
   * execution that changed between our snapshot and the subscription taking effect would stay stale:
   * when the counts we hold still disagree a moment later, reload the executions.
   */
  private reconcileSoon(): void {
    if (this.reconcileTimer || !this.loaded.value) return;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileTimer = null;
      const want = (this.pushed ?? this.task.value)?.counts ?? {};
      const have: Record<string, number> = {};
      for (const e of this.execs.values()) have[e.status] = (have[e.status] ?? 0) + 1;
      const keys = new Set([...Object.keys(want), ...Object.keys(have)]);
      const differs = [...keys].some((k) => (want[k as keyof typeof want] ?? 0) !== (have[k] ?? 0));
      if (differs && !this.reloading && !this.disposed) void this.reload();
    }, 500);
  }

  private touch(): void {
    this.publish.schedule();
  }

  /** An execution's output size as known now: the last reported count plus what arrived live beyond it. */
  bytesOf(e: ExecutionView): number {
    return e.outputBytes + (this.liveBytes.get(e.id)?.bytes ?? 0);
  }

  /** `e` is the execution's newest known state: forget the live chunks its `outputBytes` counts. */
  private countedUpTo(e: ExecutionView): void {
    const c = this.liveBytes.get(e.id);
    if (!c) return;
    if (e.outputSeq === undefined) {
      this.liveBytes.delete(e.id); // a server that does not say: its count covers what arrived so far
      return;
    }
    c.from = Math.max(c.from, e.outputSeq);
    if (c.folded.bytes && c.folded.lastSeq < c.from) {
      c.bytes -= c.folded.bytes;
      c.folded = { lastSeq: -1, bytes: 0 };
    }
    let drop = 0;
    while (drop < c.seqs.length && c.seqs[drop]! < c.from) c.bytes -= c.sizes[drop++]!;
    if (drop) {
      c.seqs.splice(0, drop);
      c.sizes.splice(0, drop);
    }
    if (c.seqs.length === 0 && !c.folded.bytes) this.liveBytes.delete(e.id);
  }

  private append(id: string, seq: number, stream: 'stdout' | 'stderr', data: Uint8Array): void {
    let c = this.liveBytes.get(id);
    const from = this.execs.get(id)?.outputSeq ?? 0;
    if (seq >= Math.max(from, c?.from ?? 0)) {
      if (!c) this.liveBytes.set(id, (c = { from, seqs: [], sizes: [], bytes: 0, folded: { lastSeq: -1, bytes: 0 } }));
      c.seqs.push(seq);
      c.sizes.push(data.length);
      c.bytes += data.length;
      if (c.seqs.length > LIVE_COUNT_CHUNKS) {
        // A long stream between two updates: the oldest half is kept as one sum (its last seq is enough).
        const half = LIVE_COUNT_CHUNKS >> 1;
        c.folded.lastSeq = c.seqs[half - 1]!;
        for (let i = 0; i < half; i++) c.folded.bytes += c.sizes[i]!;
        c.seqs.splice(0, half);
        c.sizes.splice(0, half);
      }
    }
    this.bytesPublish.schedule();
    let b = this.out.get(id);
    if (!b) this.out.set(id, (b = { chunks: [], bytes: 0, fromStart: seq === 0, overflow: false, gap: false }));
    const copy = data.slice();
    if (!b.overflow) {
      if (b.bytes + copy.length > PER_EXEC_BYTES || this.totalBytes + copy.length > TOTAL_BYTES) b.overflow = true;
      else {
        b.chunks.push({ stream, data: copy });
        b.bytes += copy.length;
        this.totalBytes += copy.length;
      }
    }
    const ls = this.listeners.get(id);
    if (ls) for (const l of ls) l(copy, stream, seq);
  }

  /** (Re)subscribes and reloads the task; called on every socket ready. */
  async resync(): Promise<void> {
    send({ type: 'task.subscribe', taskId: this.taskId, output: true });
    await this.reload();
  }

  /** Loads the task again after a failed load (the page's Retry): subscribes again and reloads. */
  async retry(): Promise<void> {
    if (this.retrying.value || this.disposed) return;
    this.retrying.value = true;
    try {
      await this.resync();
    } finally {
      this.retrying.value = false;
    }
  }

  private async reload(): Promise<void> {
    this.reloading = true;
    // Pushes that arrive while this snapshot is in flight may be newer than it: compared afterwards.
    this.pushed = null;
    this.pushedExecs.clear();
    try {
      const t = await api.get<TaskDetail>(`/api/tasks/${encodeURIComponent(this.taskId)}`);
      if (this.disposed) return;
      const { executions, ...task } = t;
      // A push that raced this snapshot and is further along wins: the task ended while the
      // snapshot was read. Taking the older `running` would undo the end, and nothing pushes it again.
      // (Set by the task.updated handler during the await: TypeScript still narrows it to the null above.)
      const pushed = this.pushed as TaskView | null;
      this.task.value = pushed && pushed.status !== 'running' && task.status === 'running' ? pushed : task;
      this.execs.clear();
      for (const e of executions) this.execs.set(e.id, e);
      for (const [id, e] of this.pushedExecs) {
        const snap = this.execs.get(id);
        if (!snap || progress(e.status) >= progress(snap.status)) this.execs.set(id, e);
      }
      for (const id of this.liveBytes.keys()) {
        const e = this.execs.get(id);
        if (e) this.countedUpTo(e);
        else this.liveBytes.delete(id);
      }
      this.pushedExecs.clear();
      this.loaded.value = true;
      this.error.value = '';
      this.touch();
      if (this.pushed) this.reconcileSoon();
    } catch (err) {
      this.error.value = (err as Error).message;
    } finally {
      this.reloading = false;
    }
  }

  /**
   * Streams an execution's output to `write`: everything so far (from memory when complete there,
   * else from the server), then live chunks, stderr in red, in the order the host produced them.
   * Returns the stop function.
   */
  follow(id: string, write: (d: Uint8Array | string) => void): () => void {
    let set = this.listeners.get(id);
    if (!set) this.listeners.set(id, (set = new Set()));
    const b = this.out.get(id);
    const e = this.execs.get(id);
    let live: Listener | null = null;
    const show: Listener = (d, stream) => {
      if (stream === 'stderr') {
        write(STDERR_ON);
        write(d);
        write(STDERR_OFF);
      } else write(d);
    };
    if ((b && b.fromStart && !b.overflow && !b.gap) || (!b && e && (e.status === 'pending' || e.status === 'dispatched'))) {
      for (const c of b?.chunks ?? []) show(c.data, c.stream);
      live = show;
      set.add(live);
    } else {
      // Not all in memory: hold live chunks while the stored output loads, then write the ones it
      // does not cover. With a seq range the server fixes the end now (X-Muster-To-Seq) and answers
      // once every chunk before it is stored, so nothing is lost or written twice at the seam.
      const held: Array<{ d: Uint8Array; stream: 'stdout' | 'stderr'; seq: number }> = [];
      const hold: Listener = (d, stream, seq) => {
        if (seq !== undefined) held.push({ d, stream, seq });
      };
      set.add(hold);
      let toSeq = Number.MAX_SAFE_INTEGER;
      const headers = (h: Headers) => {
        const v = Number(h.get('X-Muster-To-Seq'));
        if (h.has('X-Muster-To-Seq') && Number.isFinite(v)) toSeq = v;
      };
      void api.text(`/api/executions/${encodeURIComponent(id)}/output`, { color: 1, fromSeq: 0 }, headers).then(
        (text) => {
          write(text);
          set.delete(hold);
          for (const c of held) if (c.seq >= toSeq) show(c.d, c.stream);
          live = show;
          set.add(live);
        },
        (err: unknown) => {
          write(`\r\n[could not load output: ${(err as Error).message}]\r\n`);
          set.delete(hold);
        },
      );
    }
    return () => {
      if (live) set.delete(live);
    };
  }

  /** The whole output as text if it is complete in memory, else null. */
  memoryText(id: string): string | null {
    const b = this.out.get(id);
    const e = this.execs.get(id);
    if (!e) return null;
    if (!b) return e.outputBytes === 0 ? '' : null;
    if (!b.fromStart || b.overflow || b.gap) return null;
    const all = new Uint8Array(b.bytes);
    let o = 0;
    for (const c of b.chunks) {
      all.set(c.data, o);
      o += c.data.length;
    }
    return new TextDecoder().decode(all);
  }

  dispose(): void {
    this.disposed = true;
    send({ type: 'task.unsubscribe', taskId: this.taskId });
    for (const u of this.unsubs) u();
    this.publish.cancel();
    if (this.reconcileTimer) clearTimeout(this.reconcileTimer);
    this.bytesPublish.cancel();
  }
}
