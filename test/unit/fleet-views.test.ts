// Fleet views in fixed orders filter a shared fleet-wide index instead of sorting per open: the
// windows they send must equal a from-scratch sort of the matching agents, in both directions,
// after renames, status changes, removals, new agents and a reconnect storm.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { LocalBus } from '../../server/bus/bus.js';
import { AgentMap } from '../../server/fleet/agent-map.js';
import { FleetViews } from '../../server/fleet/views.js';
import { comparator, entryOf } from '../../server/fleet/order.js';
import { agentView, type AgentRecord } from '../../server/fleet/repo.js';
import type { Fleet } from '../../server/fleet/fleet.js';
import type { ConsoleChannel } from '../../server/ws/handlers.js';
import type { FleetSortKey, FleetWindowMessage, ServerToConsole } from '../../protocol/index.js';

function record(i: number, rnd: () => number): AgentRecord {
  return {
    id: `id-${i.toString(36)}`,
    name: `n${Math.floor(rnd() * 500)}`,
    hostname: `host-${Math.floor(rnd() * 3000)}`,
    ips: [],
    externalIp: null,
    platform: 'linux',
    arch: rnd() < 0.5 ? 'x64' : 'arm64',
    os: `Debian ${Math.floor(rnd() * 4) + 10}`,
    version: `1.${Math.floor(rnd() * 5)}.0`,
    cpus: 2,
    memoryBytes: 1,
    labels: { role: rnd() < 0.3 ? 'db' : 'web' },
    labelOverrides: null,
    enrollLabels: null,
    groups: [],
    secretHash: '',
    createdAt: 0,
    connectedAt: null,
    lastSeenAt: null,
    revokedAt: null,
    status: rnd() < 0.7 ? 'online' : 'offline',
    metrics: null,
    policy: null,
  };
}

function setup(n: number) {
  let seed = 42;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const agents = new AgentMap();
  for (let i = 0; i < n; i++) {
    const a = record(i, rnd);
    agents.set(a.id, a);
  }
  const bus = new LocalBus();
  const fleet = { agents, get: (id: string) => agents.get(id) } as unknown as Fleet;
  const views = new FleetViews({
    fleet,
    bus,
    log: pino({ level: 'silent' }),
    selectorLimits: { maxLength: 65_536, maxDepth: 64 } as never,
    limits: { perConsole: 8, tickMs: 1_000_000, resortMs: 0, softBufferBytes: 1 << 20 },
  });
  const sent: ServerToConsole[] = [];
  const ch = {
    id: 1,
    principal: {} as never,
    send: (m: ServerToConsole) => (sent.push(m), true),
    sendBinary: () => true,
    bufferedAmount: () => 0,
    close: () => {},
    onClose: () => {},
  } as unknown as ConsoleChannel;
  const open = (sort: FleetSortKey, desc: boolean, selector = '', status: 'all' | 'online' | 'offline' = 'all') => {
    sent.length = 0;
    views.handlers()['fleet.open'](ch, { type: 'fleet.open', ref: 'r', view: 'v', selector, status, sort, desc, offset: 0, limit: n + 1000 });
    const m = sent.find((x): x is FleetWindowMessage => x.type === 'fleet.window');
    if (!m) throw new Error(`no fleet.window: ${JSON.stringify(sent)}`);
    return m;
  };
  const expected = (sort: FleetSortKey, desc: boolean, keep: (a: AgentRecord) => boolean) =>
    [...agents.values()]
      .filter(keep)
      .map((a) => entryOf(a, sort))
      .sort(comparator(desc))
      .map((e) => e.id);
  return { agents, bus, views, open, expected, rnd, ch, sent };
}

describe('fleet views over the shared sort index', () => {
  it('sends the same order as a sort from scratch, after every kind of change', () => {
    const { agents, bus, open, expected, rnd } = setup(3000);
    const check = () => {
      for (const sort of ['name', 'hostname', 'version', 'os', 'status'] as const) {
        for (const desc of [false, true]) {
          expect(open(sort, desc).ids, `${sort} ${desc ? 'desc' : 'asc'}`).toEqual(expected(sort, desc, () => true));
        }
      }
      const m = open('hostname', true, 'labels.role == "db"', 'online');
      expect(m.ids).toEqual(expected('hostname', true, (a) => a.labels.role === 'db' && a.status === 'online'));
      expect(m.matching).toBe(m.ids!.length);
      const all = [...agents.values()];
      expect(open('name', false).byStatus).toEqual({
        online: all.filter((a) => a.status === 'online').length,
        offline: all.filter((a) => a.status === 'offline').length,
      });
    };
    check();
    // A few changes: re-positioned one by one.
    const list = [...agents.values()];
    for (let i = 0; i < 40; i++) {
      const a = list[Math.floor(rnd() * list.length)]!;
      a.hostname = `renamed-${i}`;
      a.status = a.status === 'online' ? 'offline' : 'online';
      bus.publish('agent.changed', { agent: agentView(a) });
    }
    const gone = list[7]!;
    agents.delete(gone.id);
    bus.publish('agent.removed', { agentId: gone.id });
    const fresh = record(99_999, rnd);
    agents.set(fresh.id, fresh);
    bus.publish('agent.online', { agent: agentView(fresh) });
    check();
    // An agent added without an event is still found.
    const silent = record(99_998, rnd);
    agents.set(silent.id, silent);
    check();
    // A storm (every agent changed): one rebuild.
    for (const a of agents.values()) {
      a.name = `x${Math.floor(rnd() * 100)}`;
      bus.publish('agent.changed', { agent: agentView(a) });
    }
    check();
  });
});

describe('the shared index in an enrollment storm', () => {
  it('takes in records that join the fleet before any event announces them one by one, without re-sorting the fleet', () => {
    const { agents, bus, views, open, expected, rnd } = setup(3000);
    open('name', false);
    const before = views.indexRebuilds;
    // As on a node while agents enroll: each record is in the fleet's map a while (its claim being
    // written) before its welcome publishes agent.online; views open and ticks run meanwhile.
    for (let i = 0; i < 50; i++) {
      const a = record(200_000 + i, rnd);
      agents.set(a.id, a);
      expect(open('name', false).ids).toEqual(expected('name', false, () => true));
      bus.publish('agent.online', { agent: agentView(a) });
    }
    // Two enrollments undone before their welcome: their records leave without an event.
    for (const id of [...agents.keys()].slice(-2)) agents.delete(id);
    expect(open('name', true).ids).toEqual(expected('name', true, () => true));
    expect(views.indexRebuilds - before).toBe(0);
  });
});

describe('open fleet views follow changes', () => {
  it('whole-fleet views (shared index) and filtered views (own lists) send what a fresh sort and count would', () => {
    const n = 2000;
    const { agents, bus, views, expected, rnd, ch, sent } = setup(n);
    type Spec = { sort: FleetSortKey; desc: boolean; selector: string; status: 'all' | 'online' | 'offline' };
    const specs: Record<string, Spec> = {
      whole: { sort: 'name', desc: false, selector: '', status: 'all' },
      wholeDesc: { sort: 'hostname', desc: true, selector: '', status: 'all' },
      db: { sort: 'version', desc: false, selector: 'labels.role == "db"', status: 'online' },
      offline: { sort: 'os', desc: true, selector: '', status: 'offline' },
    };
    const seen = new Map<string, { ids: string[]; matching: number; byStatus: { online: number; offline: number } }>();
    const take = () => {
      for (const m of sent.splice(0)) {
        if (m.type !== 'fleet.window') continue;
        const prev = seen.get(m.view);
        seen.set(m.view, { ids: m.ids ?? prev!.ids, matching: m.matching, byStatus: m.byStatus });
      }
    };
    for (const [view, p] of Object.entries(specs)) {
      views.handlers()['fleet.open'](ch, { type: 'fleet.open', ref: view, view, ...p, offset: 0, limit: n + 1000 });
    }
    take();
    const check = (when: string) => {
      for (const [view, p] of Object.entries(specs)) {
        // A scroll to the same window applies what changed (as the next tick would) and sends the delta.
        views.handlers()['fleet.scroll'](ch, { type: 'fleet.scroll', view, offset: 0, limit: n + 1000 });
        take();
        const sel = (a: AgentRecord) => p.selector === '' || a.labels.role === 'db';
        const all = [...agents.values()].filter(sel);
        const got = seen.get(view)!;
        const want = expected(p.sort, p.desc, (a) => sel(a) && (p.status === 'all' || a.status === p.status));
        expect(got.ids, `${view} ${when}`).toEqual(want);
        expect(got.matching, `${view} ${when}`).toBe(want.length);
        expect(got.byStatus, `${view} ${when}`).toEqual({
          online: all.filter((a) => a.status === 'online').length,
          offline: all.filter((a) => a.status === 'offline').length,
        });
      }
    };
    check('at open');
    const list = [...agents.values()];
    for (let i = 0; i < 30; i++) {
      const a = list[Math.floor(rnd() * list.length)]!;
      if (i % 3 === 0) a.hostname = `renamed-${i}`;
      if (i % 5 === 0) a.labels = { role: a.labels.role === 'db' ? 'web' : 'db' };
      a.status = a.status === 'online' ? 'offline' : 'online';
      bus.publish('agent.changed', { agent: agentView(a) });
    }
    check('after a few changes');
    // Removed agents give their slot to the next new one: the newcomer must not inherit anything.
    for (const gone of list.slice(10, 14)) {
      agents.delete(gone.id);
      bus.publish('agent.removed', { agentId: gone.id });
    }
    check('after removals');
    for (let i = 0; i < 6; i++) {
      const fresh = record(50_000 + i, rnd);
      fresh.labels = { role: 'db' };
      agents.set(fresh.id, fresh);
      bus.publish('agent.online', { agent: agentView(fresh) });
    }
    check('after new agents');
    // A re-opened view reuses the arrays of the one it replaces: nothing of the old filter may remain.
    for (const selector of ['labels.role == "web"', 'labels.role == "db"']) {
      views.handlers()['fleet.open'](ch, { type: 'fleet.open', ref: 're', view: 'db', ...specs['db']!, selector, offset: 0, limit: n + 1000 });
    }
    take();
    check('after re-opening with another filter and back');
    for (const a of [...agents.values()].slice(0, 60)) {
      a.labels = { role: a.labels.role === 'db' ? 'web' : 'db' };
      bus.publish('agent.changed', { agent: agentView(a) });
    }
    check('after label changes into and out of the re-opened filter');
    // A reconnect storm: every agent's status changes, no key moves.
    for (const a of agents.values()) {
      a.status = a.status === 'online' ? 'offline' : 'online';
      bus.publish('agent.online', { agent: agentView(a) });
    }
    check('after a status storm');
    // A storm of renames: most keys move.
    for (const a of agents.values()) {
      a.name = `y${Math.floor(rnd() * 300)}`;
      a.hostname = `h-${Math.floor(rnd() * 900)}`;
      bus.publish('agent.changed', { agent: agentView(a) });
    }
    check('after a rename storm');
  });
});
