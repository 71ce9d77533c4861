import {
  INTERACTIVE_FRAME_MAX,
  reframe,
  TERM_ACK_BYTES,
  TERM_AGENT_MAX_UNACKED,
  TERM_FRAME_MAX,
  TERM_SERVER_ACK_IDLE_MS,
  termDataHeader,
} from '../../protocol/index.js';
import type { ConsoleChannel } from '../ws/handlers.js';
import type { TerminalRecorder } from './recorder.js';
import { ScrollbackRing } from './ring.js';

/** One console attached to a session. Its acks count bytes of this session it has written. */
export interface Attachment {
  ch: ConsoleChannel;
  mode: 'control' | 'watch';
  /** Session output offset at which this console joined (after the replay). */
  base: number;
  /** Replayed scrollback bytes sent before the live stream. */
  replay: number;
  /** Bytes sent to this console (replay + live). */
  sent: number;
  /** Bytes the console acknowledged (never more than `sent`). */
  acked: number;
  /** Last time a refused input/resize of a watcher was answered (answers are throttled). */
  refusedAt: number;
}

export type SessionState = 'opening' | 'open' | 'closing' | 'closed';

/** What a session is made of (TerminalService.open builds it). */
export interface SessionInit {
  id: string;
  agentId: string;
  owner: { id: number; username: string };
  cols: number;
  rows: number;
  /** Output kept for a reattach's replay (MUSTER_TERMINAL_SCROLLBACK_BYTES). */
  scrollbackBytes: number;
  /** A watcher this many bytes behind is detached (MUSTER_TERMINAL_WATCH_MAX_LAG_BYTES). */
  watchMaxLagBytes: number;
  recorder: TerminalRecorder | null;
  /** Console and ref that asked for the session, told once the agent confirms it. */
  opener: { ch: ConsoleChannel; ref: string };
  /** Acknowledges `bytes` more output to the agent. */
  ackAgent: (bytes: number) => void;
}

/** What `finish` hands back for the caller to tell and record (once). */
export interface Finished {
  wasOpening: boolean;
  /** The console still waiting for `term.opened`, when the session ends before it. */
  opener: { ch: ConsoleChannel; ref: string } | null;
  /** Consoles attached at the end (to be told `term.closed`). */
  attachments: Attachment[];
  closedBy: ConsoleChannel | null;
}

/**
 * The live state of one terminal session on this server node: who is attached, the scrollback
 * ring, the recording, the flow-control accounting between the consoles and the agent, and its
 * lifecycle. The session owns its state and its one deadline; the service drives it through
 * the transitions and does the talking (agent, database, audit):
 *
 *   opening ──confirmOpen──▶ open ──beginClose──▶ closing ──finish──▶ closed
 *      │  awaitOpen's deadline   │ armDetach's deadline     │ beginClose's deadline
 *      └────────finish───────────┴──────────finish──────────┘
 *
 * Each state has at most one deadline (open timeout, detach timeout, close timeout); a
 * transition replaces it, and `finish` clears it and every other timer, exactly once.
 *
 * Offsets: `received` counts output bytes from the agent, `ackedToAgent` those acknowledged to
 * it. A control console has consumed output up to `base + max(0, acked - replay)`. The agent is
 * acknowledged up to the minimum over control consoles, or everything when none is attached
 * (a detached shell keeps running into the scrollback ring).
 */
export class TerminalSession {
  readonly id: string;
  readonly agentId: string;
  readonly owner: { id: number; username: string };
  readonly recorder: TerminalRecorder | null;
  readonly attachments = new Map<number, Attachment>();
  readonly ring: ScrollbackRing;
  private st: SessionState = 'opening';
  private rcvd = 0;
  private acked = 0;
  private inBytes = 0;
  private shellPid: number | null = null;
  private size: { cols: number; rows: number };
  private opener: { ch: ConsoleChannel; ref: string } | null;
  private by: ConsoleChannel | null = null;
  private why: string | null = null;
  private deadline: NodeJS.Timeout | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private readonly header: Uint8Array;
  private readonly watchMaxLag: number;
  private readonly ackAgent: (bytes: number) => void;

  constructor(init: SessionInit) {
    this.id = init.id;
    this.agentId = init.agentId;
    this.owner = init.owner;
    this.recorder = init.recorder;
    this.size = { cols: init.cols, rows: init.rows };
    this.ring = new ScrollbackRing(init.scrollbackBytes);
    this.opener = init.opener;
    this.watchMaxLag = init.watchMaxLagBytes;
    this.ackAgent = init.ackAgent;
    this.header = termDataHeader(init.id);
  }

  get state(): SessionState {
    return this.st;
  }
  get live(): boolean {
    return this.st === 'open' || this.st === 'opening';
  }
  /** Output bytes from the agent. */
  get received(): number {
    return this.rcvd;
  }
  /** Output bytes acknowledged to the agent. */
  get ackedToAgent(): number {
    return this.acked;
  }
  /** Input bytes sent to the shell. */
  get bytesIn(): number {
    return this.inBytes;
  }
  get pid(): number | null {
    return this.shellPid;
  }
  get cols(): number {
    return this.size.cols;
  }
  get rows(): number {
    return this.size.rows;
  }
  /** Why the session is closing, once `beginClose` was called. */
  get closeReason(): string | null {
    return this.why;
  }

  /* ---------------- lifecycle ---------------- */

  /** While opening: `onTimeout` runs if the agent has not confirmed the shell within `ms`. */
  awaitOpen(ms: number, onTimeout: () => void): void {
    if (this.st !== 'opening') return;
    this.setDeadline(ms, onTimeout);
  }

  /**
   * The agent started the shell: opening → open. Returns the console that asked for it (to be
   * told `term.opened` and attached), null when it left meanwhile, or false when the session is
   * not opening (a late or repeated confirmation, ignored).
   */
  confirmOpen(pid: number): { ch: ConsoleChannel; ref: string } | null | false {
    if (this.st !== 'opening') return false;
    this.clearDeadline();
    this.st = 'open';
    this.shellPid = pid;
    const opener = this.opener;
    this.opener = null;
    return opener;
  }

  /** The console `ch` went away: it is no longer waiting for the session. Whether it was. */
  forgetOpener(ch: ConsoleChannel): boolean {
    if (this.opener?.ch !== ch) return false;
    this.opener = null;
    return true;
  }

  /**
   * No control console is attached to an open session: the shell lives on for `ms`, then
   * `onExpire` runs. A control console attaching in time cancels it. Whether it was armed.
   */
  armDetach(ms: number, onExpire: () => void): boolean {
    if (this.st !== 'open' || this.controller()) return false;
    this.setDeadline(ms, onExpire);
    return true;
  }

  /**
   * open → closing: the agent is being asked to end the shell; `onTimeout` runs if it has not
   * reported the end within `ms`. False when the session is not open (opening sessions are
   * finished at once; closing and closed ones are on their way).
   */
  beginClose(reason: string, by: ConsoleChannel | null, ms: number, onTimeout: () => void): boolean {
    if (this.st !== 'open') return false;
    this.st = 'closing';
    this.why = reason;
    this.by = by;
    this.setDeadline(ms, onTimeout);
    return true;
  }

  /** → closed, exactly once: clears every timer and hands back who is to be told; null if it already was. */
  finish(): Finished | null {
    if (this.st === 'closed') return null;
    const wasOpening = this.st === 'opening';
    this.st = 'closed';
    this.clearDeadline();
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const attachments = [...this.attachments.values()];
    this.attachments.clear();
    const opener = wasOpening ? this.opener : null;
    this.opener = null;
    return { wasOpening, opener, attachments, closedBy: this.by };
  }

  private setDeadline(ms: number, fn: () => void): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      this.deadline = undefined;
      fn();
    }, ms);
    this.deadline.unref();
  }

  private clearDeadline(): void {
    clearTimeout(this.deadline);
    this.deadline = undefined;
  }

  /* ---------------- consoles and bytes ---------------- */

  controller(): Attachment | undefined {
    for (const a of this.attachments.values()) if (a.mode === 'control') return a;
    return undefined;
  }

  /**
   * Attaches a console: replays the scrollback, then it receives the live stream. A control
   * console attaching to an open session cancels its detach deadline.
   */
  attach(ch: ConsoleChannel, mode: 'control' | 'watch'): Attachment {
    if (mode === 'control' && this.st === 'open') this.clearDeadline();
    const replay = this.ring.snapshot();
    const a: Attachment = { ch, mode, base: this.rcvd, replay: replay.length, sent: replay.length, acked: 0, refusedAt: 0 };
    this.attachments.set(ch.id, a);
    for (let off = 0; off < replay.length; off += TERM_FRAME_MAX) {
      ch.sendBinary(reframe(this.header, replay.subarray(off, off + TERM_FRAME_MAX)), { bulk: true, key: this.id });
    }
    return a;
  }

  detach(chId: number): Attachment | undefined {
    const a = this.attachments.get(chId);
    if (!a) return undefined;
    this.attachments.delete(chId);
    this.pumpAcks();
    return a;
  }

  /** The shell's size changed (recorded); false when it is the same. */
  resize(cols: number, rows: number): boolean {
    if (cols === this.size.cols && rows === this.size.rows) return false;
    this.size = { cols, rows };
    this.recorder?.resize(cols, rows);
    return true;
  }

  /**
   * Input for the shell: counts it and returns the TERM_DATA frame for the agent (the console's
   * own frame when `data` is still in it, see reframe).
   */
  input(data: Uint8Array): Uint8Array {
    this.inBytes += data.length;
    return reframe(this.header, data);
  }

  /**
   * Output from the agent: to the ring, the recording and every attached console. Returns the
   * watchers that fell too far behind (the caller detaches them) or 'overrun' when the agent
   * ignores flow control.
   */
  output(data: Uint8Array): Attachment[] | 'overrun' {
    this.rcvd += data.length;
    this.ring.push(data);
    this.recorder?.output(data);
    let laggards: Attachment[] | undefined;
    if (this.attachments.size > 0) {
      // The agent's frame is forwarded as it is when `data` is still in it (no copy).
      const frame = reframe(this.header, data);
      // An echo or a prompt goes ahead of other sessions' output on the console's socket.
      const opts = { bulk: data.length > INTERACTIVE_FRAME_MAX, key: this.id };
      for (const a of this.attachments.values()) {
        if (a.mode === 'watch' && a.sent - a.acked > this.watchMaxLag) {
          (laggards ??= []).push(a);
          continue;
        }
        a.ch.sendBinary(frame, opts);
        a.sent += data.length;
      }
    }
    this.pumpAcks();
    if (this.rcvd - this.acked > TERM_AGENT_MAX_UNACKED) return 'overrun';
    return laggards ?? [];
  }

  /** A console wrote `bytes` more bytes of this session. */
  ack(chId: number, bytes: number): void {
    const a = this.attachments.get(chId);
    if (!a) return;
    a.acked = Math.min(a.sent, a.acked + bytes);
    if (a.mode === 'control') this.pumpAcks();
  }

  /** Output offset every control console has consumed (everything when none is attached). */
  private consumed(): number {
    let min = this.rcvd;
    for (const a of this.attachments.values()) {
      if (a.mode !== 'control') continue;
      min = Math.min(min, a.base + Math.max(0, a.acked - a.replay));
    }
    return min;
  }

  /**
   * Held acks go to the agent once they reach TERM_ACK_BYTES, or TERM_SERVER_ACK_IDLE_MS after
   * the consoles caught up completely (so an agent paused at any low watermark always resumes;
   * protocol/flow-control.ts).
   */
  private pumpAcks(): void {
    if (!this.live) return;
    const upTo = this.consumed();
    const bytes = upTo - this.acked;
    if (bytes <= 0) return;
    if (bytes < TERM_ACK_BYTES) {
      // More output is on its way to the consoles (its acks will follow), or they caught up: then soon.
      if (upTo === this.rcvd)
        this.ackTimer ??= setTimeout(() => {
          this.ackTimer = undefined;
          this.pumpAcksNow();
        }, TERM_SERVER_ACK_IDLE_MS).unref();
      return;
    }
    this.pumpAcksNow();
  }

  private pumpAcksNow(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.live) return;
    const upTo = this.consumed();
    const bytes = upTo - this.acked;
    if (bytes <= 0) return;
    this.acked = upTo;
    this.ackAgent(bytes);
  }
}
