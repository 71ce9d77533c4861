/**
 * Interactive traffic first on one WebSocket (used by the agent's socket to the server and the
 * server's sockets to consoles; no Node or browser dependency).
 *
 * Bulk frames (terminal output of a session that is flowing, script output, large droppable
 * pushes) are handed to the socket only while its `bufferedAmount` is below `bulkThreshold`;
 * above it they wait in this writer's queue, in order. Interactive frames (a keystroke's echo, a
 * prompt, heartbeats, control messages) go to the socket at once, ahead of the queued bulk, so
 * they wait behind at most `bulkThreshold` bytes of someone else's output instead of megabytes.
 *
 * Order within a stream is kept: a frame naming a `key` (a terminal session or an execution id)
 * that still has bulk queued goes behind it, whatever its priority, so a session's prompt never
 * overtakes its own output and an execution's result never overtakes its output.
 *
 * Draining: `ws` has no drain event; every frame is written with a callback, and each callback
 * (the socket flushed a frame to the kernel) moves queued bulk on while the socket is below the
 * threshold. Bulk is queued only while the socket holds at least `bulkThreshold` bytes this writer
 * wrote, whose callbacks are still to come, so a queue never stalls.
 *
 * The kernel's socket buffers are not in `bufferedAmount` (on loopback they grow to megabytes), so
 * with `windowBytes` the writer also bounds the bulk the peer has not read yet: after every quarter
 * window of bulk it sends a WebSocket ping carrying a sequence number, which the peer answers (every
 * WebSocket endpoint must, browsers included) only once it has read everything before it. Bulk
 * waits while more than `windowBytes` of it is unanswered; the pong moves the queue on. So an
 * echo waits behind at most about `windowBytes` of other sessions' output anywhere on the path,
 * whatever the buffers in between hold. A peer (or something in between) that never answers
 * costs no more than a pause: after WINDOW_STALL_MS without a pong the window is reopened.
 *
 * Memory: the queue adds nothing unbounded. `buffered` (socket + queue) is what callers' flow
 * control reads (the agent pauses a script's pipes, consoles over the hard limit are cut), and
 * terminal output in the queue is unacknowledged, so the agent's PTY pauses at its watermark.
 */

/** The part of a `ws` WebSocket the writer uses. */
export interface FrameSocket {
  readonly bufferedAmount: number;
  readonly readyState: number;
  /** `fin: false`: a fragment of a message whose next fragment follows (RFC 6455 §5.4). */
  send(data: string | Uint8Array, opts: { binary: boolean; fin?: boolean }, cb?: (err?: Error) => void): void;
  /** Needed for `windowBytes`: the owner passes the socket's pongs to `PriorityWriter.pong`. */
  ping?(data: Uint8Array): void;
}

/** A terminal output frame this small (an echo, a prompt, a line) is interactive; larger is bulk. */
export const INTERACTIVE_FRAME_MAX = 1024;
/** Default of the bulk threshold (server MUSTER_BULK_WRITE_THRESHOLD, agent bulkWriteThreshold). */
export const DEFAULT_BULK_WRITE_THRESHOLD = 64 * 1024;
/** Default bulk the peer may have unread (server MUSTER_BULK_WINDOW, agent bulkWindow). */
export const DEFAULT_BULK_WINDOW = 256 * 1024;
/** A window unanswered this long is assumed read (a peer that does not answer pings must not stall bulk). */
export const WINDOW_STALL_MS = 3000;
/** setTimeout/clearTimeout exist in Node and browsers alike; protocol/ has neither's types. */
const timers = globalThis as unknown as {
  setTimeout(fn: () => void, ms: number): { unref?(): void };
  clearTimeout(t: unknown): void;
};
/** First bytes of this writer's ping payloads (then a 32-bit sequence number). */
const PING_TAG = [0x6d, 0x77];

/**
 * One WebSocket message: text, binary, or a binary message given in parts that go out as its
 * fragments (a shared payload after a per-receiver header, without copying them together).
 */
export type Outgoing = string | Uint8Array | readonly Uint8Array[];

/**
 * How a frame is sent: `bulk` waits for room; `key` names the stream whose order is kept; `done`
 * is called exactly once when the socket no longer needs the frame's buffers (written to the
 * kernel, failed, or dropped unsent because the socket closed), so the caller may reuse them.
 */
export interface SendOpts {
  bulk?: boolean;
  key?: string | null;
  done?: () => void;
}

interface Queued {
  data: Outgoing;
  key: string | null;
  size: number;
  bulk: boolean;
  done: (() => void) | undefined;
}

/** Byte length of a message (UTF-16 units for text, as ws's bufferedAmount counts them approximately). */
export function outgoingSize(data: Outgoing): number {
  if (typeof data === 'string') return data.length;
  if (data instanceof Uint8Array) return data.byteLength;
  let n = 0;
  for (const p of data) n += p.byteLength;
  return n;
}

/**
 * Hands one message to the socket: parts as consecutive fragments (nothing can come between them:
 * they are written in one synchronous run); `cb` once the last one is written.
 */
export function writeMessage(sock: FrameSocket, data: Outgoing, cb: (err?: Error) => void): void {
  if (typeof data === 'string' || data instanceof Uint8Array) return sock.send(data, { binary: typeof data !== 'string' }, cb);
  const last = data.length - 1;
  if (last < 0) return sock.send(new Uint8Array(0), { binary: true }, cb);
  for (let i = 0; i < last; i++) sock.send(data[i]!, { binary: true, fin: false });
  sock.send(data[last]!, { binary: true, fin: true }, cb);
}
interface Mark {
  seq: number;
  bytes: number;
}

const OPEN = 1;

export class PriorityWriter {
  private queue: Queued[] = [];
  private head = 0;
  private queuedBytes = 0;
  /** Frames queued per key (present only while > 0). */
  private readonly perKey = new Map<string, number>();
  private pumping = false;
  /** Bulk written since the last ping, and the pings not answered yet (oldest first). */
  private sinceMark = 0;
  private marks: Mark[] = [];
  private unanswered = 0;
  private seq = 0;
  /** When the window last moved (a pong, or the first ping after none was outstanding). */
  private progressAt = 0;
  private stallTimer: unknown = null;
  private readonly written = (err?: Error): void => {
    if (err) this.clear();
    else if (this.head < this.queue.length) this.pump();
  };

  /** `windowBytes` 0: only the socket's own buffer is bounded (no pings). */
  constructor(
    private readonly sock: FrameSocket,
    readonly bulkThreshold: number,
    readonly windowBytes = 0,
  ) {
    if (!sock.ping) this.windowBytes = 0;
  }

  /** Bulk written that the peer has not been seen to read (0 without a window). */
  get unread(): number {
    return this.unanswered + this.sinceMark;
  }

  private room(): boolean {
    return this.sock.bufferedAmount < this.bulkThreshold && (this.windowBytes === 0 || this.unanswered + this.sinceMark < this.windowBytes);
  }

  /** Bytes the socket holds plus bytes waiting here: what flow control reads. */
  get buffered(): number {
    return this.sock.bufferedAmount + this.queuedBytes;
  }

  /** Bytes (and frames) waiting in this writer. */
  get queued(): { bytes: number; frames: number } {
    return { bytes: this.queuedBytes, frames: this.queue.length - this.head };
  }

  send(data: Outgoing, opts: SendOpts = {}): void {
    if (this.sock.readyState !== OPEN) return opts.done?.();
    const key = opts.key ?? null;
    const bulk = opts.bulk === true;
    const now = bulk ? this.head === this.queue.length && this.room() : key === null || !this.perKey.has(key);
    const size = outgoingSize(data);
    if (now) {
      this.write(data, size, bulk, opts.done);
      return;
    }
    this.queue.push({ data, key, size, bulk, done: opts.done });
    if (this.marks.length > 0) this.armStall();
    this.queuedBytes += size;
    if (key !== null) this.perKey.set(key, (this.perKey.get(key) ?? 0) + 1);
  }

  /** Moves queued frames to the socket while it is below the threshold. */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.head < this.queue.length && this.room()) {
        if (this.sock.readyState !== OPEN) return this.clear();
        const q = this.queue[this.head]!;
        this.queue[this.head++] = undefined as unknown as Queued;
        this.queuedBytes -= q.size;
        if (q.key !== null) {
          const n = this.perKey.get(q.key)! - 1;
          if (n === 0) this.perKey.delete(q.key);
          else this.perKey.set(q.key, n);
        }
        this.write(q.data, q.size, q.bulk, q.done);
      }
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
        return;
      }
      if (this.marks.length > 0) this.armStall();
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
    } finally {
      this.pumping = false;
    }
  }

  private write(data: Outgoing, size: number, bulk: boolean, done: (() => void) | undefined): void {
    writeMessage(
      this.sock,
      data,
      done
        ? (err) => {
            done();
            this.written(err);
          }
        : this.written,
    );
    if (!bulk || this.windowBytes === 0) return;
    this.sinceMark += size;
    if (this.sinceMark >= this.windowBytes / 4) this.mark();
  }

  /** Pings behind the bulk written since the last ping; its pong says the peer read that far. */
  private mark(): void {
    const seq = (this.seq = (this.seq + 1) >>> 0);
    if (this.marks.length === 0) this.progressAt = Date.now();
    this.marks.push({ seq, bytes: this.sinceMark });
    this.unanswered += this.sinceMark;
    this.sinceMark = 0;
    this.sock.ping!(new Uint8Array([PING_TAG[0]!, PING_TAG[1]!, seq >>> 24, (seq >>> 16) & 0xff, (seq >>> 8) & 0xff, seq & 0xff]));
  }

  /** A pong from the peer: what it acknowledges was read; the queue moves on. Other pongs are ignored. */
  pong(data: Uint8Array): void {
    if (data.length !== 6 || data[0] !== PING_TAG[0] || data[1] !== PING_TAG[1] || this.marks.length === 0) return;
    const seq = ((data[2]! << 24) | (data[3]! << 16) | (data[4]! << 8) | data[5]!) >>> 0;
    if (!this.marks.some((m) => m.seq === seq)) return;
    for (;;) {
      const m = this.marks.shift()!;
      this.unanswered -= m.bytes;
      if (m.seq === seq) break;
    }
    this.progressAt = Date.now();
    if (this.head < this.queue.length) this.pump();
    // The queue ran dry below a quarter window: nothing would ping for what was written since.
    if (this.marks.length === 0 && this.sinceMark > 0 && this.head < this.queue.length) this.mark();
  }

  /** While bulk waits for pongs: if none comes for WINDOW_STALL_MS, what is outstanding is taken as read. */
  private armStall(): void {
    if (this.stallTimer !== null) return;
    const t = timers.setTimeout(() => {
      this.stallTimer = null;
      if (this.head === this.queue.length || this.marks.length === 0) return;
      if (Date.now() - this.progressAt >= WINDOW_STALL_MS) {
        this.marks = [];
        this.unanswered = 0;
        this.sinceMark = 0;
        this.stalls++;
      }
      this.pump();
    }, WINDOW_STALL_MS);
    t.unref?.();
    this.stallTimer = t;
  }

  /** Times the window was reopened without a pong (a peer that does not answer pings). */
  stalls = 0;

  /** Drops everything queued (the socket closed or failed). */
  clear(): void {
    if (this.stallTimer !== null) timers.clearTimeout(this.stallTimer);
    this.stallTimer = null;
    const dropped = this.queue;
    const from = this.head;
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
    this.perKey.clear();
    this.marks = [];
    this.unanswered = 0;
    this.sinceMark = 0;
    // After the state is reset: a `done` that sends again finds an empty writer.
    for (let i = from; i < dropped.length; i++) dropped[i]?.done?.();
  }
}

/** The stream a control message belongs to (its terminal session, execution or file transfer), for ordering. */
export function streamKeyOf(msg: object): string | null {
  const m = msg as { sessionId?: unknown; executionId?: unknown; transferId?: unknown };
  if (typeof m.sessionId === 'string') return m.sessionId;
  if (typeof m.executionId === 'string') return m.executionId;
  if (typeof m.transferId === 'string') return m.transferId;
  return null;
}
