/**
 * Server-side fleet views (`fleet.open` / `fleet.scroll` / `fleet.window`): the server keeps the
 * filtered, sorted list and sends a console its window plus counts, then deltas for what it looks
 * at. Real server, raw agents speaking the real protocol, a real console socket; and the REST list's
 * paging and sort, which use the same order.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, cleanup, consoleSocket, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { helloAgent, sampleMetrics, type RawAgent } from '../helpers/raw-agent.js';

const N = 30;
const name = (i: number) => `fv-${String(i).padStart(2, '0')}`;

describe('fleet views', () => {
  let s: TestServer;
  let api: Api;
  const agents: Array<RawAgent & { id: string; i: number }> = [];

  beforeAll(async () => {
    s = await startServer({ env: { MUSTER_PRESENCE_FLUSH_MS: '200', MUSTER_FLEET_VIEW_RESORT_MS: '300' } });
    api = await Api.login(s.url);
    // Each raw agent heartbeats once after its enrollment's welcome (as the agent does: that confirms
    // it holds its secret). Those metrics reach views at the next presence flush: the tests start
    // once a console has seen every one of them, so no delta of theirs lands in a test's window.
    const feed = await consoleSocket(s, api);
    await feed.next((m) => m.type === 'ready');
    for (let i = 0; i < N; i++) {
      const id = randomUUID();
      const a = await helloAgent(
        s.wsUrl,
        { agentId: id, enrollToken: s.enrollToken },
        {
          name: name(i),
          hostname: `h${i}.example`,
          labels: { role: i % 3 === 0 ? 'db' : 'web' },
        },
      );
      agents.push(Object.assign(a, { id, i }));
    }
    await waitFor(async () => (await api.get('/api/agents/summary')).body.byStatus.online >= N, 'all raw agents online');
    const flushed = new Set<string>();
    await waitFor(() => {
      for (const m of feed.messages) if (m.type === 'agent.metrics') for (const it of m.items) flushed.add(it.agentId);
      return agents.every((a) => flushed.has(a.id));
    }, 'every enrollment heartbeat flushed to the consoles');
    feed.close();
  });
  afterAll(async () => {
    for (const a of agents) a.close();
    await cleanup();
  });

  it('sends the window and the counts, then only the rows of the window that change', async () => {
    const c = await consoleSocket(s, api);
    await c.next((m) => m.type === 'ready');
    c.ws.send(JSON.stringify({ type: 'fleet.feed', metrics: false }));
    c.ws.send(JSON.stringify({ type: 'fleet.open', ref: 'r1', view: 'main', sort: 'name', offset: 0, limit: 5 }));
    const first = await c.next((m) => m.type === 'fleet.window' && m.ref === 'r1', 15_000, 'first window');
    expect(first.reset).toBe(true);
    expect(first.total).toBe(N);
    expect(first.matching).toBe(N);
    expect(first.byStatus).toEqual({ online: N, offline: 0 });
    expect(first.ids).toEqual(agents.slice(0, 5).map((a) => a.id));
    expect(first.rows.map((r: any) => r.name)).toEqual([0, 1, 2, 3, 4].map(name));

    // A heartbeat of an agent outside the window sends nothing; one inside sends that row only.
    const seen = c.messages.length;
    agents[20]!.send({ type: 'heartbeat', metrics: sampleMetrics(77) });
    agents[2]!.send({ type: 'heartbeat', metrics: sampleMetrics(42) });
    // (next() scans every message so far: match on seq to skip the ones already checked.)
    const d = await c.next((m) => m.type === 'fleet.window' && m.seq > first.seq && m.rows.some((r: any) => r.id === agents[2]!.id), 15_000, 'row 2 delta');
    expect(d.rows.map((r: any) => r.id)).toEqual([agents[2]!.id]);
    expect(d.rows[0].metrics.cpuPercent).toBe(42);
    expect(d.ids).toBeUndefined();
    const later = c.messages.slice(seen).filter((m) => m.type === 'fleet.window');
    expect(later.flatMap((m) => m.rows.map((r: any) => r.id))).not.toContain(agents[20]!.id);
    // The fleet-wide metrics feed is off for this console.
    expect(c.messages.some((m) => m.type === 'agent.metrics')).toBe(false);

    // A visible agent goes offline: its row and the counts change, the window's membership does not.
    agents[1]!.ws.terminate();
    const off = await c.next(
      (m) => m.type === 'fleet.window' && m.seq > d.seq && m.rows.some((r: any) => r.id === agents[1]!.id && r.status === 'offline'),
      15_000,
      'offline row',
    );
    expect(off.byStatus).toEqual({ online: N - 1, offline: 1 });
    expect(off.matching).toBe(N);

    // Scrolling answers with the rows new to the window only.
    c.ws.send(JSON.stringify({ type: 'fleet.scroll', view: 'main', offset: 3, limit: 5 }));
    const sc = await c.next((m) => m.type === 'fleet.window' && m.offset === 3, 15_000, 'scrolled window');
    expect(sc.ids).toEqual(agents.slice(3, 8).map((a) => a.id));
    expect(sc.rows.map((r: any) => r.name)).toEqual([5, 6, 7].map(name));
    c.close();
  });

  it('filters by selector and status, sorts either way, and explains a bad selector', async () => {
    const c = await consoleSocket(s, api);
    await c.next((m) => m.type === 'ready');
    c.ws.send(JSON.stringify({ type: 'fleet.open', ref: 'db', view: 'v', selector: 'labels.role == "db"', sort: 'name', desc: true, offset: 0, limit: 100 }));
    const db = await c.next((m) => m.type === 'fleet.window' && m.ref === 'db', 15_000, 'db window');
    const dbNames = agents
      .filter((a) => a.i % 3 === 0)
      .map((a) => name(a.i))
      .reverse();
    expect(db.rows.map((r: any) => r.name)).toEqual(dbNames);
    expect(db.matching).toBe(dbNames.length);

    // Replacing the view (same id) with a status filter: an agent going offline joins it live.
    c.ws.send(JSON.stringify({ type: 'fleet.open', ref: 'off', view: 'v', status: 'offline', offset: 0, limit: 100 }));
    const offline = await c.next((m) => m.type === 'fleet.window' && m.ref === 'off', 15_000, 'offline window');
    const before = offline.matching as number;
    expect(offline.byStatus.offline).toBe(before);
    agents[10]!.ws.terminate();
    const joined = await c.next((m) => m.type === 'fleet.window' && m.ids?.includes(agents[10]!.id), 15_000, 'offline agent joins the view');
    expect(joined.matching).toBe(before + 1);
    expect(joined.rows.map((r: any) => r.id)).toContain(agents[10]!.id);

    // Sorted by cpu (descending): heartbeats re-order the view (lazily, within the re-sort bound).
    c.ws.send(JSON.stringify({ type: 'fleet.open', ref: 'cpu', view: 'v', status: 'online', sort: 'cpu', desc: true, offset: 0, limit: 3 }));
    await c.next((m) => m.type === 'fleet.window' && m.ref === 'cpu', 15_000, 'cpu window');
    agents[25]!.send({ type: 'heartbeat', metrics: sampleMetrics(99.5) });
    await c.next((m) => m.type === 'fleet.window' && m.ids?.[0] === agents[25]!.id, 15_000, 'busiest agent on top');

    c.ws.send(JSON.stringify({ type: 'fleet.open', ref: 'bad', view: 'v', selector: 'labels.role == ', offset: 0, limit: 10 }));
    const err = await c.next((m) => m.type === 'error' && m.ref === 'bad', 15_000, 'selector error');
    expect(err.code).toBe('selector_syntax');
    expect(typeof err.position).toBe('number');
    c.close();
  });

  it('GET /api/agents pages and sorts in the same order', async () => {
    const p1 = await api.get('/api/agents?limit=4&offset=0&sort=name');
    const p2 = await api.get('/api/agents?limit=4&offset=4&sort=name');
    expect(p1.body.total).toBe(N);
    expect([...p1.body.items, ...p2.body.items].map((a: any) => a.name)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map(name));
    const desc = await api.get('/api/agents?limit=2&sort=hostname&order=desc');
    expect(desc.body.items.map((a: any) => a.hostname)).toEqual(['h29.example', 'h28.example']);
    const bad = await api.get('/api/agents?sort=nope');
    expect(bad.status).toBe(400);
  });
});
