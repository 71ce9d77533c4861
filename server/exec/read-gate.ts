import type { AgentChannel, Fleet } from '../fleet/fleet.js';
import type { Logger } from '../log.js';

/**
 * The one owner of output backpressure: while the output writer is above its high-water mark
 * (`close`), every agent socket that delivers output stops being read (`admit`): TCP then pauses
 * the agent, which pauses its child. When the writer has caught up (`open`) every held socket is
 * read again at once. Driven by the writer's pressure only, told once per episode (an outage is
 * one), never per agent or per chunk.
 */
export class ReadGate {
  private closed = false;
  /** Held sockets, one per agent (its current one). */
  private readonly held = new Map<string, AgentChannel>();

  constructor(
    private readonly fleet: Pick<Fleet, 'touch'>,
    private readonly log: Logger,
  ) {}

  /** The writer's pressure changed (ExecWriteBatcher's onPressure). */
  pressure(on: boolean, queuedBytes: number): void {
    this.closed = on;
    if (on) {
      this.log.info({ queuedBytes }, 'output backpressure on: agents sending output are paused until the database catches up');
      return;
    }
    this.log.info({ pausedAgents: this.held.size, queuedBytes }, 'output backpressure off');
    for (const [agentId, ch] of this.held) {
      ch.resume?.();
      // Its heartbeats were not read while paused: that silence is ours, not the agent's.
      this.fleet.touch(agentId, ch.linkId);
    }
    this.held.clear();
  }

  /** Output arrived on `ch`: while the gate is closed, the socket is no longer read. */
  admit(agentId: string, ch: AgentChannel): void {
    if (!this.closed || this.held.get(agentId) === ch) return;
    this.held.set(agentId, ch);
    ch.pause?.();
  }

  /** Sockets not read right now. */
  get size(): number {
    return this.held.size;
  }
}
