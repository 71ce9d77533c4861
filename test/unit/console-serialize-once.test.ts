/**
 * An event sent to many consoles is serialized once, not once per console (a 10,000-host task's
 * execution updates and a large fleet's metrics flushes reach every watching console).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ServerToConsole } from '../../protocol/index.js';
import { LocalBus } from '../../server/bus/bus.js';
import { ConsoleFanout } from '../../server/exec/fanout.js';
import { ConsoleHub } from '../../server/ws/console-hub.js';
import type { ConsoleChannel } from '../../server/ws/handlers.js';

/** A console socket that records what it was given (the real one writes `json ?? JSON.stringify(msg)`). */
function fakeConsole(id: number) {
  const sent: Array<{ msg: ServerToConsole; json: string | undefined }> = [];
  const ch = {
    id,
    principal: { id: 1, username: 'op', role: 'operator' },
    sent,
    send: (msg: ServerToConsole, _droppable?: boolean, json?: string) => (sent.push({ msg, json }), true),
    sendBinary: () => true,
    bufferedAmount: () => 0,
    close() {},
    onClose() {},
  };
  return ch as unknown as ConsoleChannel & { sent: typeof sent };
}

const execution = {
  id: 'e-1',
  taskId: 't-1',
  agentId: 'a-1',
  agentName: 'web-01',
  status: 'succeeded',
  exitCode: 0,
  signal: null,
  startedAt: null,
  finishedAt: null,
  durationMs: null,
  truncated: false,
  reason: null,
  outputBytes: 3,
  containment: null,
  reconciledAt: null,
} as const;

describe('console fan-out serializes once', () => {
  afterEach(() => vi.restoreAllMocks());

  it('ConsoleHub: one JSON.stringify per bus event for every console, each given the same text', () => {
    const bus = new LocalBus();
    const hub = new ConsoleHub(bus);
    const consoles = [1, 2, 3].map(fakeConsole);
    for (const c of consoles) hub.add(c);
    const stringify = vi.spyOn(JSON, 'stringify');
    bus.publish('agent.removed', { agentId: 'a-1' });
    bus.publish('agent.metrics', { items: [{ agentId: 'a-1', metrics: {} as never, lastSeenAt: '2026-11-30T00:00:00.000Z' }] });
    expect(stringify).toHaveBeenCalledTimes(2);
    for (const c of consoles) {
      expect(c.sent.map((s) => s.msg.type)).toEqual(['agent.removed', 'agent.metrics']);
      for (const s of c.sent) expect(s.json).toBe(JSON.stringify(s.msg));
    }
  });

  it('ConsoleFanout: an execution update to a task watched by three consoles is serialized once', () => {
    const fanout = new ConsoleFanout(1 << 20);
    const consoles = [1, 2, 3].map(fakeConsole);
    for (const c of consoles) fanout.subscribe(c, 't-1', true);
    const stringify = vi.spyOn(JSON, 'stringify');
    fanout.execution('t-1', { ...execution });
    expect(stringify).toHaveBeenCalledTimes(1);
    for (const c of consoles) {
      expect(c.sent).toHaveLength(1);
      expect(c.sent[0]!.json).toBe(JSON.stringify({ type: 'execution.updated', execution }));
    }
  });
});
