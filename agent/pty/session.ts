import fs from 'node:fs';
import type { IPty } from 'node-pty';
import { INTERACTIVE_FRAME_MAX, TERM_FRAME_MAX, termDataHeader } from '../../protocol/index.js';
import type { Link } from '../capability.js';
import { killTerminalTree } from './proctree.js';

/** Limits of one session (from the agent config). */
export interface SessionLimits {
  idleTimeoutMs: number;
  highWatermark: number;
  lowWatermark: number;
}

/** While output flows, what was gathered is looked at this often. */
const COALESCE_MS = 2;
/**
 * ... and goes out as a frame when a look found no new output since the last one, when it reached
 * TERM_FRAME_MAX, or when its first bytes have waited this long (output that keeps coming
 * travels in frames of TERM_FRAME_MAX, or of this long's worth when it comes slower).
 */
const COALESCE_MAX_MS = 8;
/** A PTY read at least this large means output is flowing (an echo or a prompt is smaller). */
const FLOW_MIN = 1024;
/** Time the shell's tree has between SIGHUP and SIGKILL on close. */
const KILL_GRACE_MS = 1000;

/**
 * One PTY session. Owns the pty, its idle timer and its process tree, and reports its end
 * (`term.exit`) exactly once.
 *
 * Flow control invariant (no deadlock): the PTY is paused only while more than `highWatermark`
 * output bytes are unacknowledged, i.e. while bytes are in flight, and every byte sent is
 * eventually acknowledged by the server (by the consoles' acks, by the server itself while no
 * console is attached, or not at all because the session ends). So a paused PTY always either
 * resumes once the unacknowledged count drops below `lowWatermark`, or is closed. The sizes and
 * the relations between them (ack batches, overshoot, the server's overrun limit):
 * protocol/flow-control.ts.
 */
export class PtySession {
  private unacked = 0;
  private paused = false;
  private closed = false;
  private closeReason: string | null = null;
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | undefined;
  /** Output read while output is already flowing waits here until the end of this I/O phase. */
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private flowing = false;
  /** When the batch's first chunk was read, and whether a chunk was read since the last tick. */
  private batchSince = 0;
  private readSinceTick = false;
  private coalesceTimer: NodeJS.Timeout | undefined;
  private readonly disposables: { dispose(): void }[] = [];
  private readonly tick = () => this.onTick();
  /** The TERM_DATA header of this session's frames (made once). */
  private readonly header: Uint8Array;

  constructor(
    readonly id: string,
    private readonly pty: IPty,
    private readonly link: Link,
    private readonly limits: SessionLimits,
    private readonly onEnd: (s: PtySession, exit: { exitCode: number | null; signal: number | null; reason: string }) => void,
  ) {
    this.header = termDataHeader(id);
    this.disposables.push(pty.onData((d) => this.onOutput(d as unknown as Buffer)));
    this.disposables.push(pty.onExit((e) => this.onExit(e.exitCode, e.signal ?? null)));
    this.armIdle();
  }

  get pid(): number {
    return this.pty.pid;
  }

  /** Unacknowledged output bytes (for tests and metrics). */
  get inFlight(): number {
    return this.unacked;
  }

  /**
   * Keystrokes and pastes from the console. node-pty writes input with `fs.write` on libuv's
   * thread pool: every keystroke would wait for a pool thread to be scheduled before the shell
   * sees it (and its echo can come back). While node-pty has nothing queued, the input is written
   * here at once (the PTY master is non-blocking); whatever the tty does not take now, and any
   * error, goes to node-pty's queue as before, so input stays in order.
   */
  input(data: Uint8Array): void {
    if (this.closed) return;
    this.lastActivity = Date.now();
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let written = 0;
    const fd = directFd(this.pty);
    if (fd !== null) {
      try {
        written = fs.writeSync(fd, buf);
      } catch {
        written = 0; // EAGAIN (the tty's buffer is full) or an error: node-pty's queue handles both
      }
    }
    if (written < buf.length) this.pty.write(written === 0 ? buf : buf.subarray(written));
  }

  resize(cols: number, rows: number): void {
    if (this.closed) return;
    try {
      this.pty.resize(cols, rows);
    } catch {
      /* the pty is closing */
    }
  }

  /** The server consumed `bytes` more output bytes. */
  ack(bytes: number): void {
    this.unacked = Math.max(0, this.unacked - bytes);
    if (this.paused && this.unacked <= this.limits.lowWatermark) {
      this.paused = false;
      this.pty.resume();
    }
  }

  /** Ends the session: hangs up the shell's whole process tree. term.exit follows once the shell is gone. */
  close(reason: string): void {
    if (this.closed || this.closeReason) return;
    this.closeReason = reason;
    this.flush();
    clearTimeout(this.idleTimer);
    if (this.paused) this.pty.resume(); // let the shell see the hangup instead of blocking on write
    const pid = this.pty.pid;
    void killTerminalTree(pid, KILL_GRACE_MS).then(() => {
      // The shell ignored SIGHUP and SIGKILL reached it: node-pty reports the exit shortly; if it
      // never does (pty fd stuck), report the end anyway.
      if (!this.closed) setTimeout(() => this.onExit(null, 9), 2000).unref();
    });
  }

  private onOutput(chunk: Buffer): void {
    if (this.closed) return;
    this.lastActivity = Date.now();
    if (!this.flowing) {
      // Nothing is flowing: send at once. A keystroke's echo (a small chunk) never starts
      // coalescing, however fast the keys come; a large read means more is coming, so what
      // follows it is gathered.
      this.send(chunk);
      if (chunk.length >= FLOW_MIN) {
        this.flowing = true;
        this.coalesceTimer = setTimeout(this.tick, COALESCE_MS);
      }
      return;
    }
    if (this.batchBytes === 0) {
      // Everything read before was sent (a tick found output paused, or a full frame went): a
      // small read now is an echo or a prompt, which goes at once rather than at the next tick.
      if (chunk.length < FLOW_MIN) {
        this.send(chunk);
        return;
      }
      this.batchSince = performance.now();
    }
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    this.readSinceTick = true;
    if (this.batchBytes >= TERM_FRAME_MAX) this.flush();
  }

  /**
   * Every COALESCE_MS while output flows: send what was gathered once output paused (nothing
   * read since the last tick) or waited COALESCE_MAX_MS. A period that gathered nothing ends the
   * flowing state, so the next byte after a pause goes out at once. A PTY read returns about
   * 4 KiB; without this a flood would travel as 4 KiB frames, and every frame costs each hop
   * its own socket writes, an ack and part of a window ping.
   */
  private onTick(): void {
    this.coalesceTimer = undefined;
    if (this.closed) return;
    if (this.batchBytes === 0) {
      this.flowing = false;
      return;
    }
    const more = this.readSinceTick;
    this.readSinceTick = false;
    if (!more || performance.now() - this.batchSince >= COALESCE_MAX_MS) this.flush();
    this.coalesceTimer = setTimeout(this.tick, COALESCE_MS);
  }

  private flush(): void {
    if (this.batchBytes === 0) return;
    const batch = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    this.send(batch);
  }

  /** One frame of `chunks` (the header and the bytes copied once into it). */
  private send(chunks: Buffer | Buffer[]): void {
    const h = this.header.length;
    let n = 0;
    if (Array.isArray(chunks)) for (const c of chunks) n += c.length;
    else n = chunks.length;
    const frame = Buffer.allocUnsafe(h + n);
    frame.set(this.header, 0);
    if (Array.isArray(chunks)) {
      let at = h;
      for (const c of chunks) {
        frame.set(c, at);
        at += c.length;
      }
    } else frame.set(chunks, h);
    // An echo or a prompt goes ahead of other sessions' floods; flowing output is bulk.
    this.link.sendBinary(frame, { bulk: n > INTERACTIVE_FRAME_MAX, key: this.id });
    this.unacked += n;
    if (!this.paused && this.unacked > this.limits.highWatermark) {
      this.paused = true;
      this.pty.pause();
    }
  }

  private armIdle(): void {
    const due = this.lastActivity + this.limits.idleTimeoutMs - Date.now();
    this.idleTimer = setTimeout(
      () => {
        if (this.closed || this.closeReason) return;
        if (Date.now() - this.lastActivity >= this.limits.idleTimeoutMs) this.close('idle timeout');
        else this.armIdle();
      },
      Math.max(0, due) + 5,
    );
    this.idleTimer.unref();
  }

  private onExit(exitCode: number | null, signal: number | null): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.coalesceTimer);
    for (const d of this.disposables.splice(0)) d.dispose();
    // A shell that exits by itself may leave background jobs behind: hang them up too.
    if (!this.closeReason) void killTerminalTree(this.pty.pid, KILL_GRACE_MS);
    const reason = this.closeReason ?? (signal ? `shell killed by signal ${signal}` : `shell exited with code ${exitCode ?? '?'}`);
    this.onEnd(this, { exitCode: signal ? null : exitCode, signal: signal || null, reason });
  }
}

/** What node-pty's UnixTerminal keeps of its master fd, its state and its write queue (not in its typings). */
interface UnixTerminalInternals {
  fd?: unknown;
  _writable?: unknown;
  _socket?: { destroyed?: unknown };
  _writeStream?: { _writeQueue?: unknown };
}

/**
 * The PTY master's fd when input may be written to it directly: the terminal is open (node-pty
 * has not closed it: its own write would be a no-op then, and the fd may be closed) and its write
 * queue exists and is empty (nothing written earlier is still waiting). Null otherwise (another
 * node-pty version or platform, a closing terminal, or a queue to keep order behind), and then
 * input goes through `pty.write`.
 */
function directFd(pty: IPty): number | null {
  const t = pty as unknown as UnixTerminalInternals;
  const q = t._writeStream?._writeQueue;
  if (typeof t.fd !== 'number' || t._writable !== true || t._socket?.destroyed !== false) return null;
  return Array.isArray(q) && q.length === 0 ? t.fd : null;
}
