/**
 * The wave engine (server/waves/engine.ts) with a fake target driver and an in-memory store: the
 * rules every run in waves follows (rollouts and file distributions alike), without agents.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentRecord } from '../../server/fleet/repo.js';
import { WaveEngine, type WaveDriver, type WaveRun, type WaveTarget } from '../../server/waves/engine.js';

type S = 'pending' | 'sent' | 'ok' | 'failed' | 'skipped';
interface Run extends WaveRun {
  createdAt: number;
}
interface Target extends WaveTarget<S> {
  runId: string;
}

interface Db {
  runs: Map<string, Run>;
  targets: Map<string, Target[]>;
  /** The next writes throw this error (a database away, or a bug), one per write attempt. */
  failNext?: { err: Error; times: number };
  /** Every write that reached the store, in order. */
  log?: string[];
}

function maybeFail(db: Db): void {
  if (db.failNext && db.failNext.times > 0) {
    db.failNext.times--;
    throw db.failNext.err;
  }
}

/** A fake clock, store and driver; `sent` records every send in order. `db`: a store to start from (a restart). */
function setup(opts: { db?: Db } = {}) {
  const clock = { now: 1_000_000 };
  const db: Db = opts.db ?? { runs: new Map(), targets: new Map() };
  const sent: string[] = [];
  const published: string[] = [];
  const driver: WaveDriver<Run, Target, object> = {
    noun: 'run',
    terminal: new Set<S>(['ok', 'failed', 'skipped']),
    failed: new Set<S>(['failed']),
    done: new Set<S>(['ok']),
    pending: 'pending',
    skipped: 'skipped',
    store: {
      insert: async (row, targets) => {
        db.runs.set(row.id, { ...row });
        db.targets.set(
          row.id,
          targets.map((t) => ({ ...t })),
        );
      },
      updateRun: async (row) => {
        maybeFail(db);
        (db.log ??= []).push(`run ${row.state}`);
        db.runs.set(row.id, { ...row });
      },
      updateTarget: async (t) => {
        maybeFail(db);
        (db.log ??= []).push(`${t.agentId} ${t.state}`);
        const list = db.targets.get(t.runId)!;
        list[list.findIndex((x) => x.agentId === t.agentId)] = { ...t };
      },
      getRun: async (id) => db.runs.get(id) ?? null,
      targets: async (id) => (db.targets.get(id) ?? []).map((t) => ({ ...t })),
      active: async () => [...db.runs.values()].filter((r) => ['running', 'paused', 'soaking', 'awaiting_approval'].includes(r.state)).map((r) => ({ ...r })),
    },
    restore: async () => ({}),
    target: (row, a, wave, skip, now) => ({
      runId: row.id,
      agentId: a.id,
      agentName: a.name,
      wave,
      state: skip ? 'skipped' : 'pending',
      reason: skip,
      startedAt: null,
      updatedAt: now,
    }),
    send: (l, t) => {
      sent.push(t.agentName);
      engine.setTarget(l, t, 'sent', null);
    },
    publish: (row) => published.push(row.state),
    view: (row, targets) => ({ row, targets }),
  };
  const engine = new WaveEngine<Run, Target, object, { row: Run; targets: Target[] }>(driver, {
    log: pino({ level: 'silent' }),
    tickMs: 3_600_000,
    now: () => clock.now,
    retry: { initialMs: 5, maxMs: 20 },
  });
  // Only what the engine reads of an agent (id, name, revokedAt).
  const agents = (n: number, prefix = 'h'): AgentRecord[] =>
    Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, name: `${prefix}${i}`, revokedAt: null }) as unknown as AgentRecord);
  let seq = 0;
  const create = async ({ agents: list, skip, ...o }: Partial<Run> & { agents: AgentRecord[]; skip?: (a: AgentRecord) => string | null }) => {
    const row: Run = {
      id: `run-${++seq}`,
      waveSpec: ['100%'],
      maxFailures: 0,
      state: 'running',
      reason: null,
      currentWave: 0,
      failureBase: 0,
      soakSeconds: 0,
      approval: false,
      waveDoneAt: null,
      updatedAt: clock.now,
      finishedAt: null,
      createdAt: clock.now,
      ...o,
    };
    await engine.create(row, {}, list, skip);
    return row.id;
  };
  /** Reports an outcome for an agent's target, as an agent's reply would. */
  const report = (id: string, agentId: string, state: S) => {
    const l = engine.get(id)!;
    engine.setTarget(l, l.targets.get(agentId)!, state, state === 'failed' ? 'boom' : null);
    engine.advance(l);
  };
  const tick = () => (engine as unknown as { tick(): void }).tick();
  /** The run's state: in memory while it is there, else as stored (once every write ended). */
  const state = async (id: string) => {
    await engine.flushed();
    return engine.get(id)?.row.state ?? db.runs.get(id)!.state;
  };
  return { clock, db, sent, published, engine, agents, create, report, tick, state };
}

let open: ReturnType<typeof setup>[] = [];
const make = (o?: Parameters<typeof setup>[0]) => {
  const s = setup(o);
  open.push(s);
  return s;
};
afterEach(async () => {
  for (const s of open) await s.engine.stop();
  open = [];
});

describe('wave engine', () => {
  it('starts wave after wave (counts and cumulative percentages) and succeeds', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(10), waveSpec: [1, '50%', '100%'] });
    expect(s.sent).toEqual(['h0']);
    s.report(id, 'h0', 'ok');
    expect(s.sent).toEqual(['h0', 'h1', 'h2', 'h3', 'h4']);
    expect(s.engine.get(id)!.row.currentWave).toBe(1);
    for (const a of ['h1', 'h2', 'h3']) s.report(id, a, 'ok');
    expect(s.sent).toHaveLength(5); // the wave waits for its last target
    s.report(id, 'h4', 'ok');
    expect(s.sent).toHaveLength(10);
    for (const a of ['h5', 'h6', 'h7', 'h8', 'h9']) s.report(id, a, 'ok');
    expect(await s.state(id)).toBe('succeeded');
    await s.engine.flushed();
    expect(s.db.runs.get(id)).toMatchObject({ state: 'succeeded', reason: null });
    expect(s.engine.get(id)).toBeUndefined(); // ended, nothing in flight: out of memory
  });

  it('pauses past maxFailures; resume counts only new failures', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(6), waveSpec: [3, '100%'], maxFailures: 1 });
    s.report(id, 'h0', 'failed');
    expect(await s.state(id)).toBe('running'); // one failure is allowed
    s.report(id, 'h1', 'failed');
    expect(await s.state(id)).toBe('paused');
    expect(s.engine.get(id)!.row.reason).toMatch(/2 failure\(s\) exceed maxFailures 1/);
    s.report(id, 'h2', 'ok');
    expect(s.sent).toEqual(['h0', 'h1', 'h2']); // paused: the next wave does not start
    s.engine.resume(id);
    expect(s.sent).toEqual(['h0', 'h1', 'h2', 'h3', 'h4', 'h5']);
    s.report(id, 'h3', 'failed'); // 1 new failure: allowed
    expect(await s.state(id)).toBe('running');
    s.report(id, 'h4', 'ok');
    s.report(id, 'h5', 'ok');
    expect(await s.state(id)).toBe('failed');
    expect(s.db.runs.get(id)!.reason).toBe('3 target(s) failed');
  });

  it('pause by hand holds the next wave; pause/resume refuse the wrong state with 409', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(2), waveSpec: [1, '100%'] });
    expect(() => s.engine.resume(id)).toThrow(/run is running/);
    s.engine.pause(id, 'alice');
    expect(s.engine.get(id)!.row).toMatchObject({ state: 'paused', reason: 'paused by alice' });
    expect(() => s.engine.pause(id, 'alice')).toThrow(/run is paused/);
    s.report(id, 'h0', 'ok');
    expect(s.sent).toEqual(['h0']);
    s.engine.resume(id);
    expect(s.sent).toEqual(['h0', 'h1']);
  });

  it('cancel skips what has not started and ends the run; a cancelled run cannot be resumed', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(4), waveSpec: [2, '100%'] });
    s.engine.cancel(id, 'bob');
    expect(await s.state(id)).toBe('cancelled');
    await s.engine.flushed();
    const targets = s.db.targets.get(id)!;
    expect(targets.map((t) => t.state)).toEqual(['skipped', 'skipped', 'skipped', 'skipped']);
    expect(targets[3]!.reason).toBe('cancelled by bob');
    expect(() => s.engine.resume(id)).toThrow(/not active/);
    expect(s.sent).toEqual(['h0', 'h1']);
  });

  it('waits soakSeconds between waves (state soaking, nextWaveAt), not after the last', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(3), waveSpec: [1, 2, '100%'], soakSeconds: 60 });
    s.report(id, 'h0', 'ok');
    expect(await s.state(id)).toBe('soaking');
    expect(s.engine.get(id)!.row.waveDoneAt).toBe(s.clock.now);
    s.clock.now += 59_000;
    s.tick();
    expect(s.sent).toEqual(['h0']);
    s.clock.now += 1_000;
    s.tick();
    expect(await s.state(id)).toBe('running');
    expect(s.sent).toEqual(['h0', 'h1']);
    s.report(id, 'h1', 'ok');
    expect(await s.state(id)).toBe('soaking');
    s.clock.now += 60_000;
    s.tick();
    s.report(id, 'h2', 'ok');
    expect(await s.state(id)).toBe('succeeded'); // no soak after the last wave
  });

  it('a run with approval waits in awaiting_approval until approved; approve is refused in other states', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(2), waveSpec: [1, '100%'], approval: true });
    expect(() => s.engine.approve(id)).toThrow(/run is running/);
    s.report(id, 'h0', 'ok');
    expect(await s.state(id)).toBe('awaiting_approval');
    expect(s.engine.get(id)!.row.reason).toBe('wave 1 done; approve to start wave 2');
    s.tick();
    expect(s.sent).toEqual(['h0']);
    s.engine.approve(id);
    expect(await s.state(id)).toBe('running');
    expect(s.sent).toEqual(['h0', 'h1']);
    s.report(id, 'h1', 'ok');
    expect(await s.state(id)).toBe('succeeded'); // nothing to approve after the last wave
  });

  it('soak then approval: the approval is asked once the soak is over; pause and resume keep the soak start', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(2), waveSpec: [1, '100%'], soakSeconds: 10, approval: true });
    s.report(id, 'h0', 'ok');
    expect(await s.state(id)).toBe('soaking');
    const doneAt = s.clock.now;
    s.clock.now += 5_000;
    s.engine.pause(id, 'carol');
    s.engine.resume(id);
    expect(s.engine.get(id)!.row).toMatchObject({ state: 'soaking', waveDoneAt: doneAt });
    s.clock.now += 5_000;
    s.tick();
    expect(await s.state(id)).toBe('awaiting_approval');
    s.engine.approve(id);
    expect(s.sent).toEqual(['h0', 'h1']);
  });

  it('every target skipped (or none) ends nothing_to_do, with the reasons, never succeeded', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(3), skip: () => 'already there' });
    expect(await s.state(id)).toBe('nothing_to_do');
    await s.engine.flushed();
    expect(s.db.runs.get(id)!.reason).toBe('nothing to do: all 3 target(s) skipped (already there: 3)');
    const none = await s.create({ agents: [] });
    expect(await s.state(none)).toBe('nothing_to_do');
    await s.engine.flushed();
    expect(s.db.runs.get(none)!.reason).toBe('nothing to do: no target');
    // Some skipped, some done: a success.
    const some = await s.create({ agents: s.agents(2), skip: (a) => (a.id === 'h0' ? 'already there' : null) });
    s.report(some, 'h1', 'ok');
    expect(await s.state(some)).toBe('succeeded');
  });

  it('a write that fails because the database is away is retried, and the writes after it wait: the store ends right and in order', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(2), waveSpec: [1, '100%'] });
    s.db.log = [];
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3306'), { code: 'ECONNREFUSED' });
    s.db.failNext = { err: refused, times: 4 };
    s.report(id, 'h0', 'ok'); // h0 ok, then wave 2 starts: run running (wave 1), h1 sent
    s.report(id, 'h1', 'ok'); // h1 ok, run succeeded
    expect(await s.state(id)).toBe('succeeded');
    expect(s.db.failNext.times).toBe(0); // every failure was met, and retried
    expect(s.db.runs.get(id)).toMatchObject({ state: 'succeeded', currentWave: 1 });
    expect(s.db.targets.get(id)!.map((t) => t.state)).toEqual(['ok', 'ok']);
    // Nothing skipped or reordered: each change stored once, in the order it happened.
    expect(s.db.log).toEqual(['h0 ok', 'run running', 'h1 pending', 'h1 sent', 'h1 ok', 'run succeeded']);
  });

  it('a write that fails for another reason (a bug, a constraint) is logged and not retried', async () => {
    const s = make();
    const id = await s.create({ agents: s.agents(1) });
    s.db.log = [];
    s.db.failNext = { err: Object.assign(new Error('Data too long for column'), { code: 'ER_DATA_TOO_LONG' }), times: 1 };
    s.report(id, 'h0', 'ok');
    expect(await s.state(id)).toBe('succeeded');
    expect(s.db.log).toEqual(['run succeeded']); // the target's write was dropped, the next one stored
  });

  it('after a restart, an active run goes on where it was: soak, approval and the waves', async () => {
    const a = make();
    const id = await a.create({ agents: a.agents(3), waveSpec: [1, 2, '100%'], soakSeconds: 30, approval: true });
    a.report(id, 'h0', 'ok');
    expect(await a.state(id)).toBe('soaking');
    await a.engine.stop();
    // A new process over the same store.
    const b = make({ db: a.db });
    b.clock.now = a.clock.now + 31_000;
    await b.engine.start();
    expect(b.engine.get(id)!.row.state).toBe('soaking');
    b.tick();
    expect(await b.state(id)).toBe('awaiting_approval');
    b.engine.approve(id);
    expect(b.sent).toEqual(['h1']);
    b.report(id, 'h1', 'ok');
    b.clock.now += 30_000;
    b.tick();
    b.engine.approve(id);
    b.report(id, 'h2', 'ok');
    expect(await b.state(id)).toBe('succeeded');
    await b.engine.flushed();
    expect(b.db.runs.get(id)!.state).toBe('succeeded');
  });
});
