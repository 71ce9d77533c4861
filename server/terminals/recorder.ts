import fs from 'node:fs';
import path from 'node:path';

/** Output merged into one event when it arrives within this many ms of the event's first chunk. */
const MERGE_MS = 20;
const MERGE_MAX_CHARS = 64 * 1024;

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
  private pending = '';
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
    if (this.closed || this.truncated) return;
    const text = this.decoder.decode(data, { stream: true });
    if (!text) return;
    const t = this.now();
    if (this.pending && (t - this.pendingAt > MERGE_MS / 1000 || this.pending.length > MERGE_MAX_CHARS)) this.flush();
    if (!this.pending) {
      this.pendingAt = t;
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, MERGE_MS * 5).unref();
    }
    this.pending += text;
  }

  resize(cols: number, rows: number): void {
    if (this.closed || this.truncated) return;
    this.flush();
    this.event(this.now(), 'r', `${cols}x${rows}`);
  }

  private flush(): void {
    if (!this.pending) return;
    const text = this.pending;
    this.pending = '';
    this.event(this.pendingAt, 'o', text);
  }

  private event(t: number, kind: 'o' | 'r', data: string): void {
    this.line(JSON.stringify([Math.round(t * 1e6) / 1e6, kind, data]));
  }

  private line(json: string): void {
    if (this.closed || this.truncated) return;
    const buf = Buffer.from(`${json}\n`);
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
      if (tail) this.pending += tail;
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
