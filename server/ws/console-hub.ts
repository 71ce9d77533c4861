import type { ServerToConsole } from '../../protocol/index.js';
import type { Bus } from '../bus/bus.js';
import type { ConsoleChannel } from './handlers.js';

/** Fans fleet-wide bus events out to every open console. Metrics pushes are droppable. */
export class ConsoleHub {
  private readonly consoles = new Set<ConsoleChannel>();
  private readonly unsubs: Array<() => void> = [];

  constructor(bus: Bus) {
    const all = (msg: ServerToConsole, droppable = false) => {
      for (const c of this.consoles) c.send(msg, droppable);
    };
    this.unsubs.push(
      bus.subscribe('agent.online', (p) => all({ type: 'agent.online', ...p })),
      bus.subscribe('agent.offline', (p) => all({ type: 'agent.offline', ...p })),
      bus.subscribe('agent.changed', (p) => all({ type: 'agent.changed', ...p })),
      bus.subscribe('agent.removed', (p) => all({ type: 'agent.removed', ...p })),
      bus.subscribe('agent.metrics', (p) => {
        if (p.items.length === 0) return;
        const msg: ServerToConsole = { type: 'agent.metrics', items: p.items };
        all(msg, true);
      }),
      bus.subscribe('task.updated', (p) => all({ type: 'task.updated', ...p }, true)),
      bus.subscribe('rollout.updated', (p) => all({ type: 'rollout.updated', ...p }, true)),
    );
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
