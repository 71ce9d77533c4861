import type { IPty } from 'node-pty';
import { encodeTermData, INTERACTIVE_FRAME_MAX, TERM_FRAME_MAX } from '../../protocol/index.js';
import type { Link } from '../capability.js';
import { killTerminalTree } from './proctree.js';

/** Limits of one session (from the agent config). */
export interface SessionLimits {
  idleTimeoutMs: number;
  highWatermark: number;
  lowWatermark: number;
}

/** While output flows, it is gathered for this long before a frame goes out. */
const COALESCE_MS = 2;
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
  private coalesceTimer: NodeJS.Timeout | undefined;
  private readonly disposables: { dispose(): void }[] = [];
  private readonly tick = () => this.onTick();

  constructor(
    readonly id: string,
    private readonly pty: IPty,
    private readonly link: Link,
    private readonly limits: SessionLimits,
    private readonly onEnd: (s: PtySession, exit: { exitCode: number | null; signal: number | null; reason: string }) => void,
  ) {
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

  /** Keystrokes and pastes from the console. */
  input(data: Uint8Array): void {
    if (this.closed) return;
    this.lastActivity = Date.now();
    this.pty.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
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
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes >= TERM_FRAME_MAX) this.flush();
  }

  /**
   * Every COALESCE_MS while output flows: send what was gathered. A period that gathered
   * nothing ends the flowing state, so the next byte after a pause goes out at once. A PTY read
   * returns about 4 KiB; without this a flood would travel as 4 KiB frames.
   */
  private onTick(): void {
    this.coalesceTimer = undefined;
    if (this.closed) return;
    if (this.batchBytes > 0) {
      this.flush();
      this.coalesceTimer = setTimeout(this.tick, COALESCE_MS);
    } else {
      this.flowing = false;
    }
  }

  private flush(): void {
    if (this.batchBytes === 0) return;
    const data = this.batch.length === 1 ? this.batch[0]! : Buffer.concat(this.batch, this.batchBytes);
    this.batch = [];
    this.batchBytes = 0;
    this.send(data);
  }

  private send(data: Buffer): void {
    // An echo or a prompt goes ahead of other sessions' floods; flowing output is bulk.
    this.link.sendBinary(encodeTermData(this.id, data), { bulk: data.length > INTERACTIVE_FRAME_MAX, key: this.id });
    this.unacked += data.length;
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
