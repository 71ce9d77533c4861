import { describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Hello, Metrics } from '../../protocol/index.js';
import type { BusEvents } from '../../server/bus/bus.js';
import type { Bus } from '../../server/bus/bus.js';
import type { TxBatcher } from '../../server/db/tx-batcher.js';
import { AgentMetrics, Fleet, isoCache, type AgentChannel } from '../../server/fleet/fleet.js';
import type { AgentRepo, ConnectionRepo } from '../../server/fleet/repo.js';
import { createMetrics } from '../../server/metrics.js';

const metrics = (cpu: number): Metrics => ({
  cpuPercent: cpu,
  memUsedBytes: 3_000_000_000 + cpu,
  memTotalBytes: 8_000_000_000,
  load: [0.5 + cpu, 0.25, 0],
  diskUsedBytes: 10_000_000_000,
  diskTotalBytes: 50_000_000_000,
  uptimeSec: 1234.5,
  runningExecutions: 1,
  openTerminals: 0,
});

describe('isoCache', () => {
  it('formats every timestamp as Date#toISOString does', () => {
    const iso = isoCache();
    const base = Date.UTC(2026, 11, 2, 5, 59, 58, 990);
    const times = [0, 999, 1000, -1, -1001, base, 253402300799999, 253402300800000, -62167219200001, 8.64e15];
    for (let i = 0; i < 5000; i++) times.push(base + Math.floor(Math.random() * 5000));
    for (let i = 0; i < 2000; i++) times.push(Math.floor((Math.random() - 0.2) * 4e12));
    for (const t of times) expect(iso(t)).toBe(new Date(t).toISOString());
  });
});

describe('AgentMetrics', () => {
  it('serializes as the heartbeat metrics it holds, and set() replaces every field', () => {
    const a = new AgentMetrics(metrics(10));
    expect(JSON.parse(JSON.stringify(a))).toEqual(metrics(10));
    expect(Object.keys(a)).toEqual(Object.keys(metrics(10)));
    const load = a.load;
    a.set(metrics(42.5));
    expect(JSON.parse(JSON.stringify(a))).toEqual(metrics(42.5));
    expect(a.load).toBe(load); // in place
  });
});

/**
 * Presence flush: every agent heard from since the last flush is pushed once (metrics, exact
 * last seen) and its last_seen_at persisted; an agent not heard from is not; a failed write is
 * retried by the next flush.
 */
describe('Fleet presence flush', () => {
  function setup() {
    const published: BusEvents['agent.metrics'][] = [];
    const touched: string[][] = [];
    let failNext = false;
    const repo = {
      upsertFromHello: async () => {},
      touchMany: async (ids: string[]) => {
        if (failNext) {
          failNext = false;
          throw new Error('database away');
        }
        touched.push([...ids].sort());
        return 1;
      },
    };
    let nextConn = 1;
    const fleet = new Fleet({
      repo: repo as unknown as AgentRepo,
      connections: { open: async () => nextConn++ } as unknown as ConnectionRepo,
      bus: {
        publish: (topic: string, p: unknown) => {
          if (topic === 'agent.metrics') published.push(p as BusEvents['agent.metrics']);
        },
      } as unknown as Bus,
      log: pino({ level: 'silent' }),
      metrics: createMetrics(),
      writes: { run: (fn: (trx: unknown) => Promise<unknown>) => fn({}) } as unknown as TxBatcher,
      nodeId: 'n1',
      heartbeatIntervalMs: 5000,
      flushMs: 60_000,
    });
    let linkId = 1;
    // Each hello reports other facts (a new name), so the registration takes the transaction path faked here.
    const connect = async (id: string) => {
      const ch = { linkId: linkId++, remoteAddress: null, send: () => true, close: () => {} } as unknown as AgentChannel;
      await fleet.connect(ch, { agentId: id, name: `${id}-${linkId}`, ips: [], labels: {} } as unknown as Hello, 'hash');
      return ch;
    };
    return { fleet, published, touched, connect, failNext: () => (failNext = true) };
  }

  it('pushes and persists each agent heard from once per flush, in place, and retries a failed write', async () => {
    const { fleet, published, touched, connect, failNext } = setup();
    const a = await connect('a');
    const b = await connect('b');
    await connect('c');
    fleet.heartbeat('a', a.linkId, metrics(1));
    fleet.heartbeat('a', a.linkId, metrics(2));
    fleet.heartbeat('b', b.linkId, metrics(3));
    fleet.heartbeat('b', b.linkId + 100, metrics(99)); // an older link of b: ignored
    await fleet.flush();
    expect(published).toHaveLength(1);
    const items = published[0]!.items;
    expect(items.map((i) => i.agentId).sort()).toEqual(['a', 'b']);
    expect(JSON.parse(JSON.stringify(items.find((i) => i.agentId === 'a')!.metrics))).toEqual(metrics(2));
    expect(JSON.parse(JSON.stringify(fleet.get('b')!.metrics))).toEqual(metrics(3));
    expect(items.find((i) => i.agentId === 'a')!.lastSeenAt).toBe(new Date(fleet.get('a')!.lastSeenAt!).toISOString());
    expect(touched).toEqual([['a', 'b']]);
    // The record's object is the connection's own from its first heartbeat on: updated in place.
    const own = fleet.get('a')!.metrics;
    expect(own).toBeInstanceOf(AgentMetrics);
    fleet.heartbeat('a', a.linkId, metrics(7));
    expect(fleet.get('a')!.metrics).toBe(own);
    expect(fleet.get('a')!.metrics!.cpuPercent).toBe(7);

    await fleet.flush();
    expect(published).toHaveLength(2);
    expect(touched).toEqual([['a', 'b'], ['a']]);
    // Nothing heard since: nothing pushed or written.
    await fleet.flush();
    expect(published).toHaveLength(2);

    fleet.heartbeat('a', a.linkId, metrics(8));
    failNext();
    await fleet.flush(); // a heard, its write fails…
    expect(published).toHaveLength(3);
    expect(published[2]!.items.map((i) => i.agentId)).toEqual(['a']);
    expect(touched).toHaveLength(2);
    fleet.heartbeat('a', a.linkId, metrics(9)); // …heard again meanwhile: still one item, one row
    await fleet.flush();
    expect(published).toHaveLength(4);
    expect(published[3]!.items.map((i) => i.agentId)).toEqual(['a']);
    expect(published[3]!.items[0]!.metrics.cpuPercent).toBe(9);
    expect(touched).toEqual([['a', 'b'], ['a'], ['a']]);
    await fleet.flush();
    expect(published).toHaveLength(4);
  });

  it("a reconnect's first heartbeat gives the record a new metrics object (the old one is not written to)", async () => {
    const { fleet, connect } = setup();
    const a1 = await connect('a');
    fleet.heartbeat('a', a1.linkId, metrics(1));
    const first = fleet.get('a')!.metrics;
    const a2 = await connect('a'); // replaces a1
    fleet.heartbeat('a', a2.linkId, metrics(2));
    expect(fleet.get('a')!.metrics).not.toBe(first);
    expect(first!.cpuPercent).toBe(1);
    expect(fleet.get('a')!.metrics!.cpuPercent).toBe(2);
  });
});
