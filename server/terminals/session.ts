import { encodeTermData, INTERACTIVE_FRAME_MAX } from '../../protocol/index.js';
import type { ConsoleChannel } from '../ws/handlers.js';
import type { AsciicastRecorder } from './recorder.js';
import { ScrollbackRing } from './ring.js';

/** Replay and relay frames are cut at this size. */
const FRAME_MAX = 64 * 1024;
/**
 * Held acks are forwarded to the agent once they reach this many bytes, or ACK_IDLE_MS after the
 * consoles have caught up completely (so an agent paused at any low watermark always resumes).
 * The delay matters for typing: each echo is acknowledged by the console, and forwarding each of
 * those acks at once cost the server a socket write and the agent a message per keystroke; now a
 * burst of keys costs one.
 */
const ACK_MIN = 16 * 1024;
const ACK_IDLE_MS = 25;
/** A watcher this many bytes behind is detached: watchers never slow the operator's session down. */
const WATCH_MAX_LAG = 4 * 1024 * 1024;
/** An agent this far ahead of the consoles ignores flow control: the session is ended. */
export const AGENT_MAX_UNACKED = 16 * 1024 * 1024;

const idBytes = new Map<string, number>();

/**
 * The TERM_DATA frame to send consoles for `data` from an agent. decodeFrame returns the payload
 * as a view into the received frame, and both hops use the same frame layout, so the agent's
 * frame is forwarded as it is (no copy) whenever it is still in front of the payload.
 */
function relayFrame(sessionId: string, data: Uint8Array): Uint8Array {
  let idLen = idBytes.get(sessionId);
  if (idLen === undefined) {
    idLen = new TextEncoder().encode(sessionId).length;
    if (idBytes.size > 10_000) idBytes.clear();
    idBytes.set(sessionId, idLen);
  }
  const start = data.byteOffset - 2 - idLen;
  if (start >= 0) {
    const frame = new Uint8Array(data.buffer, start, data.byteLength + 2 + idLen);
    if (frame[0] === 0x01 && frame[1] === idLen && Buffer.from(frame.buffer, start + 2, idLen).toString('utf8') === sessionId) return frame;
  }
  return encodeTermData(sessionId, data);
}

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

/**
 * The live state of one terminal session on this server node: who is attached, the scrollback
 * ring, the recording, and the flow-control accounting between the consoles and the agent.
 *
 * Offsets: `received` counts output bytes from the agent, `ackedToAgent` those acknowledged to
 * it. A control console has consumed output up to `base + max(0, acked - replay)`. The agent is
 * acknowledged up to the minimum over control consoles, or everything when none is attached
 * (a detached shell keeps running into the scrollback ring).
 */
export class TerminalSession {
  state: SessionState = 'opening';
  received = 0;
  ackedToAgent = 0;
  bytesIn = 0;
  pid: number | null = null;
  readonly attachments = new Map<number, Attachment>();
  readonly ring: ScrollbackRing;
  detachTimer: NodeJS.Timeout | undefined;
  openTimer: NodeJS.Timeout | undefined;
  /** Console and ref that asked for the session, until the agent confirms it. */
  opener: { ch: ConsoleChannel; ref: string } | null;
  /** Who ended the session (audit actor), when a person did. */
  closedBy: ConsoleChannel | null = null;
  closeReason: string | null = null;

  constructor(
    readonly id: string,
    readonly agentId: string,
    readonly owner: { id: number; username: string },
    public cols: number,
    public rows: number,
    scrollbackBytes: number,
    readonly recorder: AsciicastRecorder | null,
    opener: { ch: ConsoleChannel; ref: string },
    private readonly ackAgent: (bytes: number) => void,
  ) {
    this.ring = new ScrollbackRing(scrollbackBytes);
    this.opener = opener;
  }

  get live(): boolean {
    return this.state === 'open' || this.state === 'opening';
  }

  controller(): Attachment | undefined {
    for (const a of this.attachments.values()) if (a.mode === 'control') return a;
    return undefined;
  }

  /** Attaches a console: replays the scrollback, then it receives the live stream. */
  attach(ch: ConsoleChannel, mode: 'control' | 'watch'): Attachment {
    const replay = this.ring.snapshot();
    const a: Attachment = { ch, mode, base: this.received, replay: replay.length, sent: replay.length, acked: 0, refusedAt: 0 };
    this.attachments.set(ch.id, a);
    for (let off = 0; off < replay.length; off += FRAME_MAX) {
      ch.sendBinary(encodeTermData(this.id, replay.subarray(off, off + FRAME_MAX)), { bulk: true, key: this.id });
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

  /**
   * Output from the agent: to the ring, the recording and every attached console. Returns the
   * watchers that fell too far behind (the caller detaches them) or 'overrun' when the agent
   * ignores flow control.
   */
  output(data: Uint8Array): Attachment[] | 'overrun' {
    this.received += data.length;
    this.ring.push(data);
    this.recorder?.output(data);
    let laggards: Attachment[] | undefined;
    if (this.attachments.size > 0) {
      const frame = relayFrame(this.id, data);
      // An echo or a prompt goes ahead of other sessions' output on the console's socket.
      const opts = { bulk: data.length > INTERACTIVE_FRAME_MAX, key: this.id };
      for (const a of this.attachments.values()) {
        if (a.mode === 'watch' && a.sent - a.acked > WATCH_MAX_LAG) {
          (laggards ??= []).push(a);
          continue;
        }
        a.ch.sendBinary(frame, opts);
        a.sent += data.length;
      }
    }
    this.pumpAcks();
    if (this.received - this.ackedToAgent > AGENT_MAX_UNACKED) return 'overrun';
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
    let min = this.received;
    for (const a of this.attachments.values()) {
      if (a.mode !== 'control') continue;
      min = Math.min(min, a.base + Math.max(0, a.acked - a.replay));
    }
    return min;
  }

  private ackTimer: NodeJS.Timeout | undefined;

  private pumpAcks(): void {
    if (!this.live) return;
    const upTo = this.consumed();
    const bytes = upTo - this.ackedToAgent;
    if (bytes <= 0) return;
    if (bytes < ACK_MIN) {
      // More output is on its way to the consoles (its acks will follow), or they caught up: then soon.
      if (upTo === this.received)
        this.ackTimer ??= setTimeout(() => {
          this.ackTimer = undefined;
          this.pumpAcksNow();
        }, ACK_IDLE_MS).unref();
      return;
    }
    this.pumpAcksNow();
  }

  private pumpAcksNow(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    if (!this.live) return;
    const upTo = this.consumed();
    const bytes = upTo - this.ackedToAgent;
    if (bytes <= 0) return;
    this.ackedToAgent = upTo;
    this.ackAgent(bytes);
  }
}
