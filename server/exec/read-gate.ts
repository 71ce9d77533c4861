import type { AgentChannel, Fleet } from '../fleet/fleet.js';
import type { Logger } from '../log.js';

/**
 * What one socket may still deliver once it is resumed and the gate closes again: the rest of the
 * read in hand (Node reads a socket 64 KiB at a time; the socket is paused by the first output
 * message of that read).
 */
export const READ_BYTES = 64 * 1024;

/** A socket that delivered output (or was resumed) this recently is streaming: paused at the next close. */
export const STREAMING_MS = 1000;

/**
 * The one owner of output backpressure: while the output writer is above its high-water mark
 * (`close`), agent sockets that deliver output are not read: TCP then pauses the agent, which
 * pauses its child. Driven by the writer's pressure only, told once per episode (an outage is one),
 * never per agent or per chunk.
 *
 * At the close, every socket streaming output (delivered within STREAMING_MS, or resumed since the
 * last open) is paused at once, and any other that delivers later is paused then (`admit`). Pausing
 * each only when it next delivered let every streaming socket add a read to the writer's queue after
 * the close: with 1,000 agents streaming, the queue reached 79–178 MB above a 16 MiB high-water mark.
 * A socket resumed that delivered nothing until the close is paused once more, then no longer
 * counted as streaming (it is idle, or its agent slow).
 *
 * At the open, the held sockets are read again oldest first, only as many per turn of the event loop
 * as the writer has room for (`room()` / READ_BYTES), the next ones on the next turn while it stays
 * open; one paused again goes to the back. So the writer's queue stays within about twice its mark
 * whatever the number of agents.
 */
export class ReadGate {
  private closed = false;
  /** Held sockets, one per agent (its current one), oldest first; `idle`: resumed last time and delivered nothing. */
  private readonly held = new Map<string, { ch: AgentChannel; idle: boolean }>();
  /** Sockets streaming output: when each last delivered (or was resumed), and whether it delivered since. */
  private readonly active = new Map<string, { ch: AgentChannel; at: number; delivered: boolean }>();
  private releasing: NodeJS.Immediate | undefined;

  constructor(
    private readonly fleet: Pick<Fleet, 'touch'>,
    private readonly log: Logger,
    /** Output bytes the writer takes before it is pressured again (its high-water mark minus its queue). */
    private readonly room: () => number,
  ) {}

  /** The writer's pressure changed (ExecWriteBatcher's onPressure). */
  pressure(on: boolean, queuedBytes: number): void {
    this.closed = on;
    if (on) {
      clearImmediate(this.releasing);
      this.releasing = undefined;
      const waiting = this.held.size;
      const since = Date.now() - STREAMING_MS;
      for (const [agentId, a] of this.active) if (a.at >= since) this.hold(agentId, a.ch, !a.delivered);
      this.active.clear();
      this.log.info(
        { queuedBytes, paused: this.held.size - waiting, stillHeld: waiting },
        'output backpressure on: agents sending output are paused until the database catches up',
      );
      return;
    }
    this.log.info({ pausedAgents: this.held.size, queuedBytes }, 'output backpressure off');
    this.release();
  }

  /** Output arrived on `ch`: while the gate is closed, the socket is no longer read. */
  admit(agentId: string, ch: AgentChannel): void {
    if (!this.closed) {
      const a = this.active.get(agentId);
      if (a?.ch === ch) {
        a.at = Date.now();
        a.delivered = true;
      } else this.active.set(agentId, { ch, at: Date.now(), delivered: true });
      return;
    }
    if (this.held.get(agentId)?.ch !== ch) this.hold(agentId, ch, false);
  }

  /**
   * An agent went away: its socket is not kept for the next close. (A held one stays in line: it
   * may already be the agent's new socket, which must be resumed; resuming a closed one is nothing.)
   */
  forget(agentId: string): void {
    this.active.delete(agentId);
  }

  private hold(agentId: string, ch: AgentChannel, idle: boolean): void {
    // Held again (or its agent's new socket): to the back of the line.
    this.held.delete(agentId);
    this.held.set(agentId, { ch, idle });
    ch.pause?.();
  }

  /** Sockets not read right now. */
  get size(): number {
    return this.held.size;
  }

  /** Resumes the oldest held sockets the writer has room for; the rest on the next turn if still open. */
  private release(): void {
    this.releasing = undefined;
    if (this.closed) return;
    let n = Math.max(1, Math.floor(this.room() / READ_BYTES));
    const now = Date.now();
    for (const [agentId, { ch, idle }] of this.held) {
      if (n-- <= 0) break;
      this.held.delete(agentId);
      // Streaming until it shows otherwise: paused at the next close even if its output is not read by then.
      if (!idle) this.active.set(agentId, { ch, at: now, delivered: false });
      ch.resume?.();
      // Its heartbeats were not read while paused: that silence is ours, not the agent's.
      this.fleet.touch(agentId, ch.linkId);
    }
    // After this turn's reads (setImmediate runs once the poll phase has read the sockets resumed now).
    if (this.held.size) this.releasing = setImmediate(() => this.release());
  }
}
