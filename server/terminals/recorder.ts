import { isAscii } from 'node:buffer';
import fs from 'node:fs';
import path from 'node:path';

/** Output merged into one event when it arrives within this many ms of the event's first chunk. */
const MERGE_MS = 20;
/** An event's text is at most about this many bytes (JSON-escaped); more output starts the next. */
const MERGE_MAX_BYTES = 64 * 1024;
const QUOTE = 0x22;
/** First size of a recorder's event buffer (it grows to the largest event written). */
const EV_INITIAL_BYTES = 4096;
/** An event buffer grown larger than this (output that is mostly escapes) is not kept after its event. */
const EV_KEEP_BYTES = 256 * 1024;
/** Event buffers written to the file are kept for the next events, at most this many per recorder. */
const EV_SPARE_MAX = 2;

export interface RecordingResult {
  bytes: number;
  truncated: boolean;
}

/**
 * Writes one terminal session as asciicast v2: a header line, then `[time, "o", text]` output
 * and `[time, "r", "COLSxROWS"]` resize events. Output bytes are decoded as a UTF-8 stream (a
 * character split across frames stays whole). Stops at `maxBytes` and marks itself truncated.
 */
export class AsciicastRecorder {
  private readonly out: fs.WriteStream;
  private readonly decoder = new TextDecoder('utf-8');
  private readonly t0 = performance.now();
  private bytes = 0;
  private truncated = false;
  private closed = false;
  /**
   * The pending event's line as it will be written, `[time,"o","` then its text JSON-escaped,
   * chunk after chunk, in a buffer this recorder reuses (grown when an event needs more): each
   * chunk's escaped text is written straight into it, no buffer per chunk.
   */
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
  /** Bytes of `ev` in use (0: no pending event), and of them the escaped text (`pendingBytes`). */
  private evAt = 0;
  private pendingBytes = 0;
  /** Whether the decoder may hold the first bytes of a character cut at the end of the last chunk. */
  private decoderHolds = false;
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
    this.line(
      JSON.stringify({
        version: 2,
        width: o.cols,
        height: o.rows,
        timestamp: Math.floor(Date.now() / 1000),
        env: { TERM: 'xterm-256color', ...(o.shell ? { SHELL: o.shell } : {}) },
        ...(o.title ? { title: o.title } : {}),
      }),
    );
  }

  private now(): number {
    return (performance.now() - this.t0) / 1000;
  }

  output(data: Uint8Array): void {
    if (this.closed || this.truncated || data.length === 0) return;
    // Most output is ASCII: read it as Latin-1 (a copy, no UTF-8 decoding) unless the decoder
    // holds the start of a character from the last chunk. Otherwise the streaming decoder; a
    // chunk ending in an ASCII byte leaves nothing in it. The text and its JSON are the only
    // allocations per chunk (short-lived strings; no buffer).
    let text: string;
    let ascii = false;
    if (!this.decoderHolds && isAscii(data)) {
      text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('latin1');
      ascii = true;
    } else {
      text = this.decoder.decode(data, { stream: true });
      this.decoderHolds = data[data.length - 1]! >= 0x80;
      if (!text) return;
    }
    const t = this.now();
    if (this.pendingBytes > 0 && (t - this.pendingAt > MERGE_MS / 1000 || this.pendingBytes > MERGE_MAX_BYTES)) this.flush();
    if (this.evAt === 0) this.begin(t);
    this.append(JSON.stringify(text), ascii);
  }

  /** Starts the pending event at `t`: its head, up to the opening quote of its text. */
  private begin(t: number): void {
    this.pendingAt = t;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, MERGE_MS * 5).unref();
    const head = `[${stamp(t)},"o","`;
    this.reserve(head.length);
    this.evAt = this.ev.write(head, 0, 'latin1');
  }

  /**
   * Appends the text of `json` (a JSON string: its escaped text between quotes) to the pending
   * event. JSON of ASCII text is ASCII: written as Latin-1 (a copy, as UTF-8 would write it).
   */
  private append(json: string, ascii: boolean): void {
    const n = (ascii ? json.length : Buffer.byteLength(json)) - 2;
    this.reserve(n + 2);
    // Written one byte early, its opening quote over the event's last byte, which is put back:
    // the escaped text lands at evAt, and its closing quote is overwritten by what follows.
    const at = this.evAt - 1;
    const last = this.ev[at]!;
    this.ev.write(json, at, ascii ? 'latin1' : 'utf8');
    this.ev[at] = last;
    this.evAt += n;
    this.pendingBytes += n;
  }

  /** Room for `n` more bytes of the event and its closing `"]\n`. */
  private reserve(n: number): void {
    const need = this.evAt + n + 3;
    if (need <= this.ev.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(need, this.ev.length * 2));
    this.ev.copy(grown, 0, 0, this.evAt);
    this.ev = grown;
  }

  resize(cols: number, rows: number): void {
    if (this.closed || this.truncated) return;
    this.flush();
    this.event(this.now(), 'r', `${cols}x${rows}`);
  }

  private flush(): void {
    if (this.evAt === 0) return;
    const ev = this.ev;
    let at = this.evAt;
    ev[at++] = QUOTE;
    ev[at++] = 0x5d; // ]
    ev[at++] = 0x0a; // \n
    this.evAt = 0;
    this.pendingBytes = 0;
    // The event buffer goes to the file as it is; the next event takes a spare one.
    this.ev = this.spare.pop() ?? Buffer.allocUnsafeSlow(EV_INITIAL_BYTES);
    if (this.write(ev.subarray(0, at), true)) this.writing.push(ev);
    else if (ev.length <= EV_KEEP_BYTES) this.spare.push(ev);
  }

  private event(t: number, kind: 'o' | 'r', data: string): void {
    this.line(`[${stamp(t)},${JSON.stringify(kind)},${JSON.stringify(data)}]`);
  }

  private line(json: string): void {
    this.write(Buffer.from(`${json}\n`));
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
      const tail = this.decoder.decode();
      if (tail) {
        if (this.evAt === 0) this.begin(this.now());
        clearTimeout(this.timer);
        this.append(JSON.stringify(tail), false);
      }
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

/** An event's time as asciicast writes it: seconds, rounded to the microsecond. */
function stamp(t: number): string {
  return JSON.stringify(Math.round(t * 1e6) / 1e6);
}
