import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ServerToAgent } from '../../protocol/index.js';
import type { NodeHandler, NodeLink } from '../../server/cluster/node-link.js';
import { ExecRelay, type RelayBounds } from '../../server/exec/relay.js';

// The relay's three tables with small bounds (MUSTER_CLUSTER_MAX_* are these numbers in a server),
// driven through the node messages that fill them; no NATS, no server.

/** A node link that records what is sent and lets the test deliver messages from other nodes. */
class FakeLink implements NodeLink {
  readonly nodeId = 'A';
  readonly handlers = new Map<string, NodeHandler>();
  readonly sent: { node: string; kind: string; meta: unknown }[] = [];
  send(node: string, kind: string, meta: unknown): boolean {
    this.sent.push({ node, kind, meta });
    return true;
  }
  request(): Promise<unknown> {
    return Promise.reject(new Error('not in this test'));
  }
  broadcast(): void {}
  handle(kind: string, handler: NodeHandler): () => void {
    this.handlers.set(kind, handler);
    return () => this.handlers.delete(kind);
  }
  close(): void {}
  /** A message of `kind` arriving from node `from`. */
  deliver(kind: string, meta: unknown, from: string): void {
    const h = this.handlers.get(kind);
    if (!h) throw new Error(`no handler for ${kind}`);
    void h(meta, new Uint8Array(0), from);
  }
}

function relayWith(bounds: RelayBounds) {
  const link = new FakeLink();
  const relay = new ExecRelay({
    enabled: true,
    link,
    // Every agent is connected to this node for to-agent delivery, none for the owner's view.
    fleet: { isOnline: () => false, send: () => true, get: () => undefined, touch: () => {} },
    agentNode: () => 'presence',
    scheduler: { holds: () => false, agentReturned: () => [], agentLeft: () => {}, release: () => false },
    fanout: { output: () => {}, ended: () => {}, subscribers: () => 0 },
    bus: { subscribe: () => () => {} },
    log: pino({ level: 'silent' }),
    bounds,
  });
  relay.start({
    started: () => {},
    output: () => {},
    finished: () => {},
    rejected: () => {},
    cancel: () => Promise.resolve(),
  });
  return { relay, link };
}

const big = 1_000_000;
const run = (executionId: string) => ({ a: 'agent-1', m: { type: 'exec.cancel', executionId } as unknown as ServerToAgent });

describe('ExecRelay bounds', () => {
  it('relayed executions: past the bound the least recently named is forgotten first', () => {
    const { relay, link } = relayWith({ maxRelayedExecutions: 3, maxAgentRoutes: big, maxWatchedTasks: big });
    for (const e of ['e1', 'e2', 'e3']) link.deliver('exec.to-agent', run(e), 'B');
    expect(['e1', 'e2', 'e3'].map((e) => relay.relays(e))).toEqual([true, true, true]);
    // e1 named again by its owner: it is now the newest, so e2 goes when e4 comes.
    link.deliver('exec.to-agent', run('e1'), 'B');
    link.deliver('exec.to-agent', run('e4'), 'B');
    expect(['e1', 'e2', 'e3', 'e4'].map((e) => relay.relays(e))).toEqual([true, false, true, true]);
    // forward() (an owner found in the database) fills the same table.
    relay.forward('C', 'agent-1', { type: 'exec.started', executionId: 'e5' } as never);
    expect(['e1', 'e3', 'e4', 'e5'].map((e) => relay.relays(e))).toEqual([true, false, true, true]);
  });

  it('agent routes: past the bound the oldest hello is forgotten and presence answers for it', () => {
    const { relay, link } = relayWith({ maxRelayedExecutions: big, maxAgentRoutes: 2, maxWatchedTasks: big });
    link.deliver('exec.hello', { a: 'a1', x: [] }, 'B');
    link.deliver('exec.hello', { a: 'a2', x: [] }, 'C');
    expect([relay.nodeOf('a1'), relay.nodeOf('a2')]).toEqual(['B', 'C']);
    link.deliver('exec.hello', { a: 'a3', x: [] }, 'D');
    expect([relay.nodeOf('a1'), relay.nodeOf('a2'), relay.nodeOf('a3')]).toEqual(['presence', 'C', 'D']);
  });

  it('watched tasks: past the bound the oldest task stops getting live output on other nodes', () => {
    const { relay, link } = relayWith({ maxRelayedExecutions: big, maxAgentRoutes: big, maxWatchedTasks: 2 });
    for (const t of ['t1', 't2', 't3']) link.deliver('exec.watch', { t }, 'C');
    link.sent.length = 0;
    for (const t of ['t1', 't2', 't3']) relay.liveOutput(t, `x-${t}`, 'stdout', 0, new Uint8Array([1]));
    expect(link.sent.map((s) => [s.node, s.kind, (s.meta as { t: string }).t])).toEqual([
      ['C', 'exec.live', 't2'],
      ['C', 'exec.live', 't3'],
    ]);
  });
});
