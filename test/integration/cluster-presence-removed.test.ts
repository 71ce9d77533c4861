/**
 * A node hears of an undone enrollment (`agent.removed` from node-a) and of the agent online again
 * on node-b (it came back with its secret and was enrolled again with it) in either order: the
 * record stays when the removal is older news than the claim on node-b, and a removal applied first
 * is corrected from the database. ClusterPresence of node-c on a real SQLite schema, the two nodes'
 * events delivered by hand in each order.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { Hello } from '../../protocol/index.js';
import { LocalBus, type BusEvents } from '../../server/bus/bus.js';
import type { NatsBus } from '../../server/cluster/nats-bus.js';
import { ClusterPresence } from '../../server/cluster/presence.js';
import { migrateLatest, openDb } from '../../server/db/db.js';
import { TxBatcher } from '../../server/db/tx-batcher.js';
import { Fleet } from '../../server/fleet/fleet.js';
import { agentView, AgentRepo, ConnectionRepo } from '../../server/fleet/repo.js';
import { createMetrics } from '../../server/metrics.js';
import { cleanup, tmpDir, waitFor } from '../helpers/harness.js';
import { helloFor } from '../helpers/raw-agent.js';

afterAll(cleanup);

async function setup() {
  const { db } = openDb(undefined, tmpDir('presence-removed'));
  await migrateLatest(db);
  const repo = new AgentRepo(db);
  const fleet = new Fleet({
    repo,
    connections: new ConnectionRepo(db),
    bus: new LocalBus(),
    log: pino({ level: 'silent' }),
    metrics: createMetrics(),
    writes: new TxBatcher(db),
    nodeId: 'node-c',
    heartbeatIntervalMs: 5000,
    flushMs: 1000,
  });
  const remote = new Map<string, (p: unknown, origin: string) => boolean | void>();
  const bus = {
    subscribeRemote: (topic: string, h: (p: unknown, origin: string) => boolean | void) => (remote.set(topic, h), () => remote.delete(topic)),
    deliverLocal: () => {},
  } as unknown as NatsBus;
  const nc = { subscribe: () => ({ unsubscribe: () => {} }), publish: () => {} } as never;
  const presence = new ClusterPresence({
    nc,
    bus,
    db,
    log: pino({ level: 'silent' }),
    cluster: 't',
    nodeId: 'node-c',
    liveNodes: () => new Set(['node-a', 'node-b', 'node-c']),
  });
  await presence.attach(fleet, repo);
  const id = randomUUID();
  // The row as node-b's re-enrollment left it (same id and secret as the undone enrollment).
  await repo.claim(helloFor(id, { name: 'back' }) as unknown as Hello, 'h'.repeat(64), Date.now(), null);
  for (const r of await repo.loadMany([id])) fleet.agents.set(r.id, { ...r, status: 'offline' });
  const fire = <T extends keyof BusEvents>(topic: T, p: BusEvents[T], origin: string) => remote.get(topic)!(p, origin);
  const view = agentView({ ...fleet.get(id)!, status: 'online' });
  const online = () => fire('agent.online', { agent: view }, 'node-b');
  const removed = () => fire('agent.removed', { agentId: id }, 'node-a');
  return { db, fleet, presence, id, online, removed };
}

describe('cluster presence: an undone enrollment and the re-enrolled agent online elsewhere, in either order', () => {
  it("online on node-b first, then node-a's removal: stale news, the record stays online", async () => {
    const t = await setup();
    try {
      t.online();
      expect(t.fleet.get(t.id)?.status).toBe('online');
      expect(t.removed()).toBe(false);
      expect(t.fleet.get(t.id)?.status).toBe('online');
      expect(t.presence.ownerOf(t.id)).toBe('node-b');
    } finally {
      t.presence.close();
      await t.db.destroy();
    }
  });

  it("node-a's removal first, then online on node-b: dropped, then back from the database, online", async () => {
    const t = await setup();
    try {
      expect(t.removed()).toBe(true);
      expect(t.fleet.get(t.id)).toBeUndefined();
      t.online();
      const rec = await waitFor(() => t.fleet.get(t.id), 'the record back from the database');
      expect(rec.status).toBe('online');
      expect(rec.name).toBe('back');
    } finally {
      t.presence.close();
      await t.db.destroy();
    }
  });
});
