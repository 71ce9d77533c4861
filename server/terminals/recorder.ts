import { isAscii } from 'node:buffer';
import fs from 'node:fs';
import path from 'node:path';

/** Output merged into one event when it arrives within this many ms of the event's first chunk. */
const MERGE_MS = 20;
/** An event's text is at most about this many bytes (JSON-escaped); more output starts the next. */
const MERGE_MAX_BYTES = 64 * 1024;
const QUOTE = 0x22;

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
   * The pending event's text, JSON-escaped, one piece per chunk: each chunk is escaped on arrival
   * (JSON.stringify of a flat string; of the merged text it would first copy the concatenation).
   */
  private pending: Buffer[] = [];
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
    // chunk ending in an ASCII byte leaves nothing in it.
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
    // JSON of ASCII text is ASCII: Latin-1 encodes it as UTF-8 would (a copy). The quotes are cut off.
    const json = Buffer.from(JSON.stringify(text), ascii ? 'latin1' : 'utf8');
    const t = this.now();
    if (this.pendingBytes > 0 && (t - this.pendingAt > MERGE_MS / 1000 || this.pendingBytes > MERGE_MAX_BYTES)) this.flush();
    if (this.pendingBytes === 0) {
      this.pendingAt = t;
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, MERGE_MS * 5).unref();
    }
    this.pending.push(json.subarray(1, json.length - 1));
    this.pendingBytes += json.length - 2;
  }

  resize(cols: number, rows: number): void {
    if (this.closed || this.truncated) return;
    this.flush();
    this.event(this.now(), 'r', `${cols}x${rows}`);
  }

  private flush(): void {
    if (this.pendingBytes === 0) return;
    const pieces = this.pending;
    const n = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    // [time, "o", "<pieces>"] as event() would write it for the joined text.
    const head = Buffer.from(`[${stamp(this.pendingAt)},"o",`);
    const buf = Buffer.allocUnsafe(head.length + n + 4);
    let at = head.copy(buf, 0);
    buf[at++] = QUOTE;
    for (const p of pieces) at += p.copy(buf, at);
    buf[at++] = QUOTE;
    buf[at++] = 0x5d; // ]
    buf[at++] = 0x0a; // \n
    this.write(buf);
  }

  private event(t: number, kind: 'o' | 'r', data: string): void {
    this.line(`[${stamp(t)},${JSON.stringify(kind)},${JSON.stringify(data)}]`);
  }

  private line(json: string): void {
    this.write(Buffer.from(`${json}\n`));
  }

  private write(buf: Buffer): void {
    if (this.closed || this.truncated) return;
    if (this.bytes + buf.length > this.maxBytes || this.out.writableLength > this.maxQueuedBytes) {
      this.stop(this.bytes + buf.length > this.maxBytes ? 'recording size cap reached' : 'the disk is too slow for the output');
      return;
    }
    if (!this.allow(buf.length)) {
      this.stop('free space on the data disk down to its reserve (MUSTER_DISK_RESERVE_BYTES)');
      return;
    }
    this.bytes += buf.length;
    this.out.write(buf);
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
        const json = Buffer.from(JSON.stringify(tail));
        if (this.pendingBytes === 0) this.pendingAt = this.now();
        this.pending.push(json.subarray(1, json.length - 1));
        this.pendingBytes += json.length - 2;
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
