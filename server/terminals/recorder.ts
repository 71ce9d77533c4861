import fs from 'node:fs';
import path from 'node:path';

/** Output merged into one event when it arrives within this many ms of the event's first chunk. */
const MERGE_MS = 20;
/** An output event holds at most about this many bytes; more output starts the next. */
const MERGE_MAX_BYTES = 64 * 1024;
/** First size of a recorder's event buffer (it grows to the largest event written). */
const EV_INITIAL_BYTES = 4096;
/** An event buffer grown larger than this is not kept after its event. */
const EV_KEEP_BYTES = 256 * 1024;
/** Event buffers written to the file are kept for the next events, at most this many per recorder. */
const EV_SPARE_MAX = 2;

/** The first line of a recording file (then the asciicast v2 header as a JSON line, then the events). */
export const RECORDING_MAGIC = 'muster-recording 1\n';
/** An event's head: kind (`o` output, `r` resize), time (seconds since the start, float64 LE), byte length (uint32 LE). */
const EVENT_HEAD = 13;
const KIND_OUTPUT = 0x6f;
const KIND_RESIZE = 0x72;

export interface RecordingResult {
  bytes: number;
  truncated: boolean;
}

/**
 * Records one terminal session: its output bytes as they came, with their times, and its
 * resizes. The file holds RECORDING_MAGIC, the asciicast v2 header line, then binary events (an
 * EVENT_HEAD, then the bytes); `asciicastLines` turns it into asciicast v2 when it is fetched.
 * Recording is on the relay's path for every byte of output, fetching is rare: the raw bytes are
 * copied once into the event buffer, where decoding and JSON-escaping them here cost half the
 * server's CPU per MB of a flood. Output within MERGE_MS of an event's first chunk joins it, as
 * asciicast players expect. Stops at `maxBytes` and marks itself truncated.
 */
export class TerminalRecorder {
  private readonly out: fs.WriteStream;
  private readonly t0 = performance.now();
  private bytes = 0;
  private truncated = false;
  private closed = false;
  /** The pending output event as it will be written (head, then its bytes), in a buffer this recorder reuses (grown when an event needs more). */
  private ev: Buffer = Buffer.allocUnsafeSlow(EV_INITIAL_BYTES);
  /**
   * The event buffers handed to the file, oldest first (the stream calls back in order), and the
   * written ones kept for the next events: a steady flood records into the same few buffers
   * instead of a new one per event (each of which lives until the disk has taken it).
   */
  private readonly writing: Buffer[] = [];
  private readonly spare: Buffer[] = [];
  private readonly written = (): void => {
    const b = this.writing.shift();
    if (b && b.length <= EV_KEEP_BYTES && this.spare.length < EV_SPARE_MAX) this.spare.push(b);
  };
  /** Bytes of `ev` in use (0: no pending event). */
  private evAt = 0;
  private pendingAt = 0;
  private timer: NodeJS.Timeout | undefined;

  private readonly maxBytes: number;
  private readonly maxQueuedBytes: number;
  private readonly allow: (bytes: number) => boolean;
  private readonly onStop: ((reason: string) => void) | undefined;
  /** Why the recording is incomplete, once it is. */
  stopReason: string | null = null;

  /**
   * `allow(bytes)` is asked before every write: no (the disk is down to its reserve) stops the
   * recording for good, marked truncated, so a flood cannot fill the disk the database needs.
   */
  constructor(
    readonly file: string,
    o: {
      cols: number;
      rows: number;
      maxBytes: number;
      /** Above this many bytes queued for the disk the recording stops (truncated) rather than grow memory (MUSTER_TERMINAL_RECORDING_MAX_QUEUED_BYTES). */
      maxQueuedBytes: number;
      title?: string;
      shell?: string;
      allow?: (bytes: number) => boolean;
      /** Told once, when the recording stops short (cap, disk, write error). */
      onStop?: (reason: string) => void;
    },
  ) {
    this.maxBytes = o.maxBytes;
    this.maxQueuedBytes = o.maxQueuedBytes;
    this.allow = o.allow ?? (() => true);
    this.onStop = o.onStop;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    this.out = fs.createWriteStream(file, { flags: 'w', mode: 0o600 });
    this.out.on('error', (err: NodeJS.ErrnoException) => {
      this.closed = true;
      this.stop(err.code === 'ENOSPC' ? 'no space left on the data disk' : `write failed: ${err.code ?? err.message}`);
    });
    const header = JSON.stringify({
      version: 2,
      width: o.cols,
      height: o.rows,
      timestamp: Math.floor(Date.now() / 1000),
      env: { TERM: 'xterm-256color', ...(o.shell ? { SHELL: o.shell } : {}) },
      ...(o.title ? { title: o.title } : {}),
    });
    this.write(Buffer.from(`${RECORDING_MAGIC}${header}\n`));
  }

  private now(): number {
    return (performance.now() - this.t0) / 1000;
  }

  output(data: Uint8Array): void {
    if (this.closed || this.truncated || data.length === 0) return;
    const t = this.now();
    if (this.evAt > 0 && (t - this.pendingAt > MERGE_MS / 1000 || this.evAt - EVENT_HEAD + data.length > MERGE_MAX_BYTES)) this.flush();
    if (this.evAt === 0) this.begin(t);
    this.reserve(data.length);
    this.ev.set(data, this.evAt);
    this.evAt += data.length;
  }

  /** Starts the pending output event at `t`: its head (the length is set when it is written). */
  private begin(t: number): void {
    this.pendingAt = t;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, MERGE_MS * 5).unref();
    this.reserve(EVENT_HEAD);
    this.ev[0] = KIND_OUTPUT;
    this.ev.writeDoubleLE(t, 1);
    this.evAt = EVENT_HEAD;
  }

  /** Room for `n` more bytes of the event. */
  private reserve(n: number): void {
    const need = this.evAt + n;
    if (need <= this.ev.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(need, this.ev.length * 2));
    this.ev.copy(grown, 0, 0, this.evAt);
    this.ev = grown;
  }

  resize(cols: number, rows: number): void {
    if (this.closed || this.truncated) return;
    this.flush();
    const size = Buffer.from(`${cols}x${rows}`, 'latin1');
    const ev = Buffer.allocUnsafe(EVENT_HEAD + size.length);
    ev[0] = KIND_RESIZE;
    ev.writeDoubleLE(this.now(), 1);
    ev.writeUInt32LE(size.length, 9);
    size.copy(ev, EVENT_HEAD);
    this.write(ev);
  }

  private flush(): void {
    if (this.evAt === 0) return;
    const ev = this.ev;
    const at = this.evAt;
    ev.writeUInt32LE(at - EVENT_HEAD, 9);
    this.evAt = 0;
    // The event buffer goes to the file as it is; the next event takes a spare one.
    this.ev = this.spare.pop() ?? Buffer.allocUnsafeSlow(EV_INITIAL_BYTES);
    if (this.write(ev.subarray(0, at), true)) this.writing.push(ev);
    else if (ev.length <= EV_KEEP_BYTES) this.spare.push(ev);
  }

  /** Whether `buf` went to the file; `track`: its `written` callback follows once it is on disk. */
  private write(buf: Buffer, track = false): boolean {
    if (this.closed || this.truncated) return false;
    if (this.bytes + buf.length > this.maxBytes || this.out.writableLength > this.maxQueuedBytes) {
      this.stop(this.bytes + buf.length > this.maxBytes ? 'recording size cap reached' : 'the disk is too slow for the output');
      return false;
    }
    if (!this.allow(buf.length)) {
      this.stop('free space on the data disk down to its reserve (MUSTER_DISK_RESERVE_BYTES)');
      return false;
    }
    this.bytes += buf.length;
    if (track) this.out.write(buf, this.written);
    else this.out.write(buf);
    return true;
  }

  private stop(reason: string): void {
    if (this.truncated) return;
    this.truncated = true;
    this.stopReason = reason;
    this.onStop?.(reason);
  }

  /** Writes what is pending and closes the file. */
  async close(): Promise<RecordingResult> {
    if (!this.closed) {
      clearTimeout(this.timer);
      this.flush();
      this.closed = true;
      await new Promise<void>((resolve) => this.out.end(() => resolve()));
    }
    return { bytes: this.bytes, truncated: this.truncated };
  }

  get stats(): RecordingResult {
    return { bytes: this.bytes, truncated: this.truncated };
  }
}

/**
 * A recording as asciicast v2 lines (each ending in a newline): its header, then `[time, "o",
 * text]` and `[time, "r", "COLSxROWS"]` events. Output is decoded as one UTF-8 stream (a character
 * split across events stays whole); an event that decodes to nothing yet is left out. A file cut
 * short (the server stopped mid-write) ends at its last whole event.
 */
export async function* asciicastLines(file: string): AsyncGenerator<string> {
  const input = fs.createReadStream(file, { highWaterMark: 256 * 1024 });
  const decoder = new TextDecoder('utf-8');
  let buf: Buffer = Buffer.alloc(0);
  let at = 0;
  let head = false;
  let last = 0;
  for await (const chunk of input) {
    buf = at < buf.length ? Buffer.concat([buf.subarray(at), chunk as Buffer]) : (chunk as Buffer);
    at = 0;
    if (!head) {
      if (buf.length >= RECORDING_MAGIC.length && buf.toString('latin1', 0, RECORDING_MAGIC.length) !== RECORDING_MAGIC)
        throw new Error(`${file} is not a Muster terminal recording`);
      const nl = buf.indexOf(0x0a, RECORDING_MAGIC.length);
      if (nl < 0) continue;
      yield buf.toString('utf8', RECORDING_MAGIC.length, nl + 1);
      at = nl + 1;
      head = true;
    }
    const lines: string[] = [];
    while (buf.length - at >= EVENT_HEAD) {
      const n = buf.readUInt32LE(at + 9);
      if (buf.length - at < EVENT_HEAD + n) break;
      const kind = buf[at]!;
      const t = buf.readDoubleLE(at + 1);
      const data = buf.subarray(at + EVENT_HEAD, at + EVENT_HEAD + n);
      at += EVENT_HEAD + n;
      last = t;
      if (kind === KIND_OUTPUT) {
        const text = decoder.decode(data, { stream: true });
        if (text) lines.push(`[${stamp(t)},"o",${JSON.stringify(text)}]\n`);
      } else if (kind === KIND_RESIZE) lines.push(`[${stamp(t)},"r",${JSON.stringify(data.toString('latin1'))}]\n`);
    }
    if (lines.length) yield lines.join('');
  }
  if (!head) throw new Error(`${file} is not a Muster terminal recording (it ends before its header)`);
  const tail = decoder.decode();
  if (tail) yield `[${stamp(last)},"o",${JSON.stringify(tail)}]\n`;
}

/** An event's time as asciicast writes it: seconds, rounded to the microsecond. */
function stamp(t: number): string {
  return JSON.stringify(Math.round(t * 1e6) / 1e6);
}
