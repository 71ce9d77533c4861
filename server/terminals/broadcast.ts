import { randomUUID } from 'node:crypto';
import type { ConsoleMessage } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import { roleAtLeast } from '../auth/auth-service.js';
import type { Core } from '../core.js';
import type { ConsoleChannel } from '../ws/handlers.js';

/** The part of the terminal service a broadcast drives: opening a session, typing into one. */
export interface BroadcastTarget {
  readonly sessions: ReadonlyMap<string, { owner: { id: number } }>;
  open(ch: ConsoleChannel, m: ConsoleMessage<'term.open'>, allocated?: (sessionId: string) => void): Promise<void>;
  input(ch: ConsoleChannel, sessionId: string, data: Uint8Array): void;
}

interface Group {
  id: string;
  ch: ConsoleChannel;
  /** Session id → whether it is in the broadcast now (a pane that left stays a member, not joined). */
  members: Map<string, boolean>;
}

/**
 * Broadcast typing: a console opens terminals on several agents as one group and types once;
 * the server fans each keystroke frame out to every joined session of the group (one frame from
 * the browser, N to the agents). Only the console that opened the group can type into it, and
 * only into sessions it controls (input goes through the service's normal checks, so a session
 * taken over by another console or closed is skipped). Output and its flow control stay per
 * session: a broadcast changes only where input goes.
 */
export class BroadcastGroups {
  private readonly groups = new Map<string, Group>();
  private readonly closers = new WeakSet<ConsoleChannel>();

  constructor(
    private readonly core: Core,
    private readonly target: BroadcastTarget,
  ) {}

  get size(): number {
    return this.groups.size;
  }

  private actor(ch: ConsoleChannel): Actor {
    return { username: ch.principal.username, role: ch.principal.role, ip: ch.remoteAddress ?? null };
  }

  private error(ch: ConsoleChannel, code: 'forbidden' | 'limit_exceeded' | 'not_found', message: string, ref?: string): void {
    ch.send({ type: 'error', code, message, ...(ref ? { ref } : {}) });
  }

  /** `term.broadcast.open`: refused as a whole (role, pane limit, terminal caps), else one session per agent. */
  async open(ch: ConsoleChannel, m: ConsoleMessage<'term.broadcast.open'>): Promise<void> {
    const p = ch.principal;
    const agentIds = [...new Set(m.agentIds)];
    const refuse = (why: string) =>
      this.core.audit.refused(
        { actor: this.actor(ch), action: 'terminal.broadcast', targetType: 'broadcast', ok: false, details: { why, panes: agentIds.length } },
        { anyTarget: true },
      );
    if (!roleAtLeast(p.role, 'operator')) {
      refuse('forbidden');
      return this.error(ch, 'forbidden', 'broadcast terminals require the operator role', m.ref);
    }
    const max = this.core.config.broadcastMaxPanes;
    if (agentIds.length > max) {
      refuse('pane_limit');
      return this.error(ch, 'limit_exceeded', `${agentIds.length} agents picked; a broadcast has at most ${max} panes (MUSTER_BROADCAST_MAX_PANES)`, m.ref);
    }
    // The per-user cap would refuse the sessions past it one by one: refuse the broadcast whole instead.
    let mine = 0;
    for (const s of this.target.sessions.values()) if (s.owner.id === p.id) mine++;
    const perUser = this.core.config.maxTerminalsPerUser;
    if (mine + agentIds.length > perUser) {
      refuse('user_limit');
      return this.error(
        ch,
        'limit_exceeded',
        `you have ${mine} open terminal sessions; ${agentIds.length} more would pass ${perUser} per user (MUSTER_MAX_TERMINALS_PER_USER)`,
        m.ref,
      );
    }

    const g: Group = { id: randomUUID(), ch, members: new Map() };
    this.groups.set(g.id, g);
    if (!this.closers.has(ch)) {
      this.closers.add(ch);
      ch.onClose(() => {
        for (const x of [...this.groups.values()]) if (x.ch === ch) this.groups.delete(x.id);
      });
    }
    const sessionIds: (string | null)[] = agentIds.map(() => null);
    await Promise.all(
      agentIds.map((agentId, i) =>
        this.target.open(ch, { type: 'term.open', ref: `${m.ref}/${i}`, agentId, cols: m.cols, rows: m.rows }, (sid) => {
          sessionIds[i] = sid;
          g.members.set(sid, true);
        }),
      ),
    );
    // One record for the broadcast naming its sessions (each session has its own terminal.open too).
    await this.core.audit
      .record({
        actor: this.actor(ch),
        action: 'terminal.broadcast',
        targetType: 'broadcast',
        targetId: g.id,
        details: { panes: agentIds.length, sessions: agentIds.map((agentId, i) => ({ agentId, sessionId: sessionIds[i] })) },
      })
      .catch((err: unknown) => this.core.log.error({ err, broadcastId: g.id }, 'could not audit a broadcast'));
    ch.send({ type: 'term.broadcast.opened', ref: m.ref, broadcastId: g.id, sessionIds, maxPanes: max });
  }

  /** `term.broadcast.member`: a pane leaves or rejoins; only panes the broadcast opened can. */
  member(ch: ConsoleChannel, m: ConsoleMessage<'term.broadcast.member'>): void {
    const g = this.groups.get(m.broadcastId);
    if (!g || g.ch !== ch) return this.error(ch, 'not_found', `no such broadcast ${m.broadcastId}`);
    if (!g.members.has(m.sessionId)) return this.error(ch, 'not_found', `session ${m.sessionId} is not part of this broadcast`);
    g.members.set(m.sessionId, m.joined);
    this.announce(g);
  }

  close(ch: ConsoleChannel, broadcastId: string): void {
    const g = this.groups.get(broadcastId);
    if (g?.ch === ch) this.groups.delete(broadcastId);
  }

  /** A TERM_DATA frame named `id`: true when `id` is a broadcast of this console (then fanned out). */
  input(ch: ConsoleChannel, id: string, data: Uint8Array): boolean {
    const g = this.groups.get(id);
    if (!g || g.ch !== ch) return false;
    for (const [sessionId, joined] of g.members) {
      // A session whose open failed before it reached the agent is gone without an end to hear of.
      if (!this.target.sessions.has(sessionId)) g.members.delete(sessionId);
      else if (joined) this.target.input(ch, sessionId, data);
    }
    return true;
  }

  /** A session ended: it leaves every group it was in. */
  sessionEnded(sessionId: string): void {
    for (const g of this.groups.values()) {
      if (g.members.delete(sessionId)) this.announce(g);
    }
  }

  private announce(g: Group): void {
    g.ch.send({ type: 'term.broadcast.members', broadcastId: g.id, joined: [...g.members].filter(([, j]) => j).map(([id]) => id) });
  }
}
