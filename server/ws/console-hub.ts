import { CloseCode, type ServerToConsole } from '../../protocol/index.js';
import type { AuthEvent, Bus } from '../bus/bus.js';
import type { ConsoleChannel, ConsoleHandlers } from './handlers.js';

/** Fans fleet-wide bus events out to every open console. Metrics pushes are droppable. */
export class ConsoleHub {
  private readonly consoles = new Set<ConsoleChannel>();
  /** Consoles that asked for no `agent.metrics` (`fleet.feed`): they follow fleet views instead. */
  private readonly noMetrics = new WeakSet<ConsoleChannel>();
  private readonly unsubs: Array<() => void> = [];

  constructor(bus: Bus) {
    // One serialization per event, however many consoles receive it.
    const all = (msg: ServerToConsole, droppable = false) => {
      if (this.consoles.size === 0) return;
      const json = JSON.stringify(msg);
      for (const c of this.consoles) c.send(msg, droppable, json);
    };
    this.unsubs.push(
      bus.subscribe('agent.online', (p) => all({ type: 'agent.online', ...p })),
      bus.subscribe('agent.offline', (p) => all({ type: 'agent.offline', ...p })),
      bus.subscribe('agent.changed', (p) => all({ type: 'agent.changed', ...p })),
      bus.subscribe('agent.removed', (p) => all({ type: 'agent.removed', ...p })),
      bus.subscribe('agent.metrics', (p) => {
        if (p.items.length === 0) return;
        const msg: ServerToConsole = { type: 'agent.metrics', items: p.items };
        // A 100,000-agent flush is megabytes: serialized once, and only if a console wants it.
        let json: string | undefined;
        for (const c of this.consoles) if (!this.noMetrics.has(c)) c.send(msg, true, (json ??= JSON.stringify(msg)));
      }),
      bus.subscribe('task.updated', (p) => all({ type: 'task.updated', ...p }, true)),
      bus.subscribe('rollout.updated', (p) => all({ type: 'rollout.updated', ...p }, true)),
      bus.subscribe('distribution.updated', (p) => all({ type: 'distribution.updated', ...p }, true)),
      // Sockets of an ended session/token/user are closed at once (each message re-checks too).
      bus.subscribe('auth.changed', (ev) => {
        for (const c of [...this.consoles]) if (affects(ev, c)) c.close(CloseCode.sessionEnded, reasonOf(ev));
      }),
    );
  }

  /** The console messages about the socket itself: `ping` and `fleet.feed`. */
  handlers(): Pick<ConsoleHandlers, 'ping' | 'fleet.feed'> {
    return {
      ping: (ch, m) => void ch.send({ type: 'pong', ...(m.ref ? { ref: m.ref } : {}) }),
      'fleet.feed': (ch, m) => this.setFeed(ch, m.metrics),
    };
  }

  /** `fleet.feed`: whether this console gets the fleet-wide `agent.metrics` pushes (default yes). */
  setFeed(c: ConsoleChannel, metrics: boolean): void {
    if (metrics) this.noMetrics.delete(c);
    else this.noMetrics.add(c);
  }

  add(c: ConsoleChannel): void {
    this.consoles.add(c);
    c.onClose(() => this.consoles.delete(c));
  }

  get size(): number {
    return this.consoles.size;
  }

  close(code: number, reason: string): void {
    for (const c of this.consoles) c.close(code, reason);
    for (const u of this.unsubs) u();
  }
}

function affects(ev: AuthEvent, c: ConsoleChannel): boolean {
  const p = c.principal;
  if (ev.kind === 'session.ended') return p.sessionId === ev.sessionId;
  if (ev.kind === 'token.ended') return p.tokenId === ev.tokenId;
  return p.id === ev.userId;
}

function reasonOf(ev: AuthEvent): string {
  if (ev.kind === 'session.ended') return 'signed out';
  if (ev.kind === 'token.ended') return 'token revoked';
  return 'user changed (role, password or disabled); sign in again';
}
