import { connect, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { KvLease, KvLeases } from '../../server/cluster/lease.js';
import { NatsBus } from '../../server/cluster/nats-bus.js';
import { LocalNodeLink, NatsNodeLink } from '../../server/cluster/node-link.js';
import { createLogger } from '../../server/log.js';
import { sleep, waitFor } from '../helpers/harness.js';

/** NATS with JetStream at 127.0.0.1:4222 is mandatory (.ci/run starts it). */
const NATS = process.env['MUSTER_TEST_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const CLUSTER = `t${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const log = createLogger('silent');
const conns: NatsConnection[] = [];
const open = async () => {
  const nc = await connect({ servers: NATS });
  conns.push(nc);
  return nc;
};

afterAll(async () => {
  const nc = await open();
  const jsm = await nc.jetstreamManager();
  for (const b of ['leases', 'nodes', 'busy']) await jsm.streams.delete(`KV_${CLUSTER}-${b}`).catch(() => {});
  for (const c of conns) if (!c.isClosed()) await c.close();
});

describe('cluster bus over NATS', () => {
  it('delivers each event once on every node (never twice on its own), localOnly sees its own only, and remote handlers can drop stale news', async () => {
    const [a, b] = [await open(), await open()];
    const errors: unknown[] = [];
    const busA = new NatsBus(a, { cluster: CLUSTER, nodeId: 'a', onError: (e) => errors.push(e) });
    const busB = new NatsBus(b, { cluster: CLUSTER, nodeId: 'b', onError: (e) => errors.push(e) });
    // Another cluster on the same NATS must hear nothing.
    const other = new NatsBus(await open(), { cluster: `${CLUSTER}x`, nodeId: 'b', onError: (e) => errors.push(e) });
    const gotA: string[] = [];
    const gotB: string[] = [];
    const ownB: string[] = [];
    const otherGot: string[] = [];
    const remoteB: string[] = [];
    busA.subscribe('agent.removed', (p) => void gotA.push(p.agentId));
    busB.subscribe('agent.removed', (p) => void gotB.push(p.agentId));
    busB.subscribe('agent.removed', (p) => void ownB.push(p.agentId), { localOnly: true });
    busB.subscribeRemote('agent.removed', (p, origin) => {
      remoteB.push(`${origin}:${p.agentId}`);
      return p.agentId !== 'stale';
    });
    other.subscribe('agent.removed', (p) => void otherGot.push(p.agentId));
    await Promise.all(conns.map((c) => c.flush()));
    busA.publish('agent.removed', { agentId: 'from-a' });
    busB.publish('agent.removed', { agentId: 'from-b' });
    busA.publish('agent.removed', { agentId: 'stale' });
    await waitFor(() => gotA.length >= 3 && gotB.length >= 2, 'events on both nodes', 5000, 10);
    await sleep(300); // a duplicate would have arrived by now
    expect(gotA.sort()).toEqual(['from-a', 'from-b', 'stale']);
    expect(gotB.sort()).toEqual(['from-a', 'from-b']); // 'stale' dropped by the remote handler
    expect(ownB).toEqual(['from-b']);
    expect(remoteB.sort()).toEqual(['a:from-a', 'a:stale']);
    expect(otherGot).toEqual([]);
    expect(errors).toEqual([]);
    await busA.close();
    await busB.close();
    await other.close();
  });
});

describe('cluster bus over NATS: a batch event larger than max_payload', () => {
  it("arrives whole on the other node in parts no larger than the server's max_payload (a 20,000-agent metrics flush)", async () => {
    const [a, b] = [await open(), await open()];
    const max = a.info!.max_payload;
    const errors: unknown[] = [];
    const sizes: number[] = [];
    const busA = new NatsBus(a, { cluster: CLUSTER, nodeId: 'a', onError: (e) => errors.push(e) });
    const busB = new NatsBus(b, { cluster: CLUSTER, nodeId: 'b', onError: (e) => errors.push(e) });
    // What crosses the wire, as another node sees it.
    const raw = b.subscribe(`${CLUSTER}.bus.agent.metrics`, { callback: (_e, m) => void sizes.push(m.data.length) });
    const got: string[] = [];
    busB.subscribe('agent.metrics', (p) => void got.push(...p.items.map((i) => i.agentId)));
    await Promise.all([a.flush(), b.flush()]);
    const metrics = {
      cpuPercent: 12.5,
      memUsedBytes: 1 << 30,
      memTotalBytes: 8 << 30,
      load: [0.5, 0.4, 0.3] as [number, number, number],
      diskUsedBytes: 10 << 30,
      diskTotalBytes: 100 << 30,
      uptimeSec: 86_400,
      runningExecutions: 0,
      openTerminals: 0,
    };
    const lastSeenAt = new Date().toISOString();
    const items = Array.from({ length: 20_000 }, (_, i) => ({ agentId: `agent-${String(i).padStart(6, '0')}-0123456789abcdef`, metrics, lastSeenAt }));
    expect(JSON.stringify(items).length).toBeGreaterThan(max); // one message would be refused
    busA.publish('agent.metrics', { items });
    await waitFor(() => got.length >= items.length, 'every item on node b', 10_000, 10);
    await sleep(200);
    expect(errors).toEqual([]);
    expect(got).toEqual(items.map((i) => i.agentId)); // each once, in order
    expect(sizes.length).toBeGreaterThan(1);
    for (const n of sizes) expect(n).toBeLessThanOrEqual(max);
    raw.unsubscribe();
    await busA.close();
    await busB.close();
  });
});

describe('cluster leases (NATS KV)', () => {
  it('one holder at a time; when the holder dies the other takes over within the TTL', async () => {
    const ttl = 1500;
    const [a, b] = [await open(), await open()];
    const kvA = await a.jetstream().views.kv(`${CLUSTER}-leases`, { ttl, history: 1 });
    const kvB = await b.jetstream().views.kv(`${CLUSTER}-leases`, { ttl, history: 1 });
    const la = new KvLeases(kvA, 'node-a', ttl, log, ['sweep']);
    const lb = new KvLeases(kvB, 'node-b', ttl, log, ['sweep']);
    await la.start();
    await lb.start();
    // Over several renewals: exactly one holder at every sample.
    for (let i = 0; i < 30; i++) {
      expect(Number(la.held('sweep')) + Number(lb.held('sweep'))).toBe(1);
      await sleep(100);
    }
    const [holder, holderNc, other] = la.held('sweep') ? [la, a, lb] : [lb, b, la];
    // The holder "dies" (its NATS connection is gone, nothing released: like kill -9 or a partition).
    const t0 = Date.now();
    await holderNc.close();
    let overlap = false;
    await waitFor(
      () => {
        if (other.held('sweep') && holder.held('sweep')) overlap = true;
        return other.held('sweep');
      },
      'the other node takes the lease',
      ttl * 4,
      20,
    );
    const took = Date.now() - t0;
    process.stderr.write(`lease takeover after ${took} ms (ttl ${ttl} ms)\n`);
    expect(overlap).toBe(false);
    expect(holder.held('sweep')).toBe(false);
    // Expiry (ttl after the last renewal) plus one retry interval, with slack for a loaded machine.
    expect(took).toBeLessThan(ttl + ttl / 3 + 1500);
    // A clean release hands over at once.
    await other.close();
    const la2 = new KvLeases(holderNc === a ? kvB : kvA, 'node-c', ttl, log, ['sweep']);
    const t1 = Date.now();
    await la2.start();
    await waitFor(() => la2.held('sweep'), 'lease after release', ttl * 2, 20);
    expect(Date.now() - t1).toBeLessThan(ttl);
    await la2.close();
  });
});

describe('lease renewal on a busy node', () => {
  it('a renewal whose answer comes too late (written, then timed out) keeps the lease; a lease another node took is lost', async () => {
    const ttl = 3000;
    const nc = await open();
    const kv = await nc.jetstream().views.kv(`${CLUSTER}-busy`, { ttl, history: 1 });
    // The event loop busy for seconds: NATS wrote the update, the client gave up waiting for the answer.
    let late = false;
    const lateKv = new Proxy(kv, {
      get(target, prop, receiver) {
        if (prop === 'update')
          return async (...args: Parameters<typeof kv.update>) => {
            const rev = await target.update(...args);
            if (late) throw new Error('TIMEOUT');
            return rev;
          };
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const warnings: string[] = [];
    const warnLog = { info: () => {}, warn: (_o: unknown, msg: string) => void warnings.push(msg) } as unknown as typeof log;
    const lease = new KvLease(lateKv, 'busy', 'node-busy', ttl, warnLog);
    await lease.tick();
    expect(lease.held()).toBe(true);
    late = true;
    for (let i = 0; i < 3; i++) {
      await lease.tick();
      expect(lease.held(), `after late renewal ${i + 1}`).toBe(true);
    }
    late = false;
    await lease.tick();
    expect(lease.held()).toBe(true);
    expect(warnings).not.toContain('cluster lease lost');
    // Another node's write in between (the entry expired and was taken): lost, as before.
    await kv.put('busy', new TextEncoder().encode('node-other'));
    await lease.tick();
    expect(lease.held()).toBe(false);
    expect(warnings).toContain('cluster lease lost');
  });
});

describe('node-addressed messages (NodeLink)', () => {
  it('send arrives at the named node only, in order, with its binary part; request answers; broadcast reaches the others; errors are clear', async () => {
    const [a, b, c] = [await open(), await open(), await open()];
    const errors: unknown[] = [];
    const onError = (e: unknown) => void errors.push(e);
    const la = new NatsNodeLink(a, { cluster: CLUSTER, nodeId: 'node.a', onError });
    const lb = new NatsNodeLink(b, { cluster: CLUSTER, nodeId: 'node.b', onError });
    // Same node id in another cluster on the same NATS: hears nothing.
    const other = new NatsNodeLink(c, { cluster: `${CLUSTER}x`, nodeId: 'node.b', onError });
    const gotB: [unknown, string, string][] = [];
    const gotA: unknown[] = [];
    const otherGot: unknown[] = [];
    lb.handle('t.msg', (m, data, from) => void gotB.push([m, Buffer.from(data).toString(), from]));
    la.handle('t.msg', (m) => void gotA.push(m));
    other.handle('t.msg', (m) => void otherGot.push(m));
    lb.handle('t.ask', async (m) => {
      if ((m as { n: number }).n < 0) throw new Error('negative');
      return { twice: (m as { n: number }).n * 2 };
    });
    expect(() => lb.handle('t.ask', () => 1)).toThrow(/already has a handler/);
    expect(() => la.send('node.b', 'bad kind!', {})).toThrow(/bad node message kind/);
    await Promise.all([a, b, c].map((x) => x.flush()));
    for (let i = 0; i < 200; i++) expect(la.send('node.b', 't.msg', { i }, new TextEncoder().encode(`d${i}`))).toBe(true);
    await waitFor(() => gotB.length >= 200, 'messages at node.b', 5000, 10);
    expect(gotB.map(([m]) => (m as { i: number }).i)).toEqual([...Array(200).keys()]);
    expect(gotB[7]).toEqual([{ i: 7 }, 'd7', 'node.a']);
    expect(await la.request('node.b', 't.ask', { n: 21 })).toEqual({ twice: 42 });
    await expect(la.request('node.b', 't.ask', { n: -1 })).rejects.toThrow('negative');
    await expect(la.request('node.z', 't.ask', { n: 1 }, undefined, 2000)).rejects.toThrow(/node node.z does not handle t.ask/);
    lb.broadcast('t.msg', { all: 1 });
    await waitFor(() => gotA.length >= 1, 'broadcast at node.a', 5000, 10);
    await sleep(300); // its own broadcast, or another cluster's copy, would have arrived by now
    expect(gotA).toEqual([{ all: 1 }]);
    expect(gotB.length).toBe(200);
    expect(otherGot).toEqual([]);
    expect(errors).toEqual([]);
    la.close();
    lb.close();
    other.close();
    expect(la.send('node.b', 't.msg', {})).toBe(false);
  });

  it('on a single node the same interface works in process: this node only', async () => {
    const l = new LocalNodeLink('solo');
    const got: unknown[] = [];
    l.handle('t.msg', (m, d, from) => void got.push([m, d.length, from]));
    l.handle('t.ask', (m) => ({ echo: m }));
    expect(l.send('solo', 't.msg', { x: 1 }, new Uint8Array(3))).toBe(true);
    expect(l.send('other', 't.msg', { x: 2 })).toBe(false);
    expect(l.send('solo', 't.none', {})).toBe(false);
    await waitFor(() => got.length === 1, 'local delivery', 1000, 5);
    expect(got).toEqual([[{ x: 1 }, 3, 'solo']]);
    expect(await l.request('solo', 't.ask', 5)).toEqual({ echo: 5 });
    await expect(l.request('other', 't.ask', 5)).rejects.toThrow(/no node other/);
    l.broadcast('t.msg', {});
    await sleep(20);
    expect(got.length).toBe(1);
  });
});
