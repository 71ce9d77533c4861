import { describe, expect, it } from 'vitest';
import { MetricsHistory } from '../../server/fleet/history.js';

const m = (cpu: number, memPct = 50, diskPct = 25, load = 1) => ({
  cpuPercent: cpu,
  memUsedBytes: memPct,
  memTotalBytes: 100,
  diskUsedBytes: diskPct,
  diskTotalBytes: 100,
  load: [load, 0, 0] as [number, number, number],
  uptimeSec: 1,
  runningExecutions: 0,
  openTerminals: 0,
});

describe('MetricsHistory', () => {
  it('averages each step, keeps only the window, and includes the step being filled', () => {
    const h = new MetricsHistory({ points: 3, stepMs: 1000, maxAgents: 10 });
    h.add('a', m(10, 40), 10_000);
    h.add('a', m(30, 60), 10_500);
    h.add('a', m(50), 11_200);
    h.add('a', m(70), 13_100);
    h.add('a', m(90, 50, 75, 3), 13_900);
    // Window at 13.9 s: steps 11, 12, 13; step 10 fell out, step 12 had no heartbeat.
    expect(h.get('a', 13_900)).toEqual([
      { t: new Date(11_000).toISOString(), cpu: 50, mem: 50, disk: 25, load: 1 },
      { t: new Date(13_000).toISOString(), cpu: 80, mem: 50, disk: 50, load: 2 },
    ]);
    expect(h.get('a', 10_900)).toEqual([{ t: new Date(10_000).toISOString(), cpu: 20, mem: 50, disk: 25, load: 1 }]);
    // An old slot is not read as a new one (ring wrap-around).
    expect(h.get('a', 16_000)).toEqual([]);
    expect(h.get('nobody')).toBeNull();
  });

  it('holds at most maxAgents; an agent silent for the whole window gives its slot back', () => {
    const h = new MetricsHistory({ points: 3, stepMs: 1000, maxAgents: 2 });
    h.add('a', m(1), 1_000);
    h.add('b', m(1), 1_000);
    h.add('c', m(1), 2_000);
    expect(h.size).toBe(2);
    expect(h.get('c', 2_000)).toBeNull();
    h.add('b', m(1), 4_500);
    h.add('c', m(1), 4_600); // a: silent since step 1, outside the window ending at step 4
    expect(h.get('a', 4_600)).toBeNull();
    expect(h.get('c', 4_600)).toHaveLength(1);
    h.remove('b');
    expect(h.size).toBe(1);
  });

  it('keeps agents apart across slab chunks, and a reused slot starts empty', () => {
    const h = new MetricsHistory({ points: 3, stepMs: 1000, maxAgents: 1000 });
    // 600 agents: three slab chunks of 256; each agent's own averages.
    for (let a = 0; a < 600; a++) {
      h.add(`a${a}`, m(a % 100), 1_000);
      h.add(`a${a}`, m((a + 2) % 100), 1_500);
    }
    for (const a of [0, 255, 256, 511, 599]) {
      expect(h.get(`a${a}`, 1_900)).toEqual([{ t: new Date(1_000).toISOString(), cpu: (a % 100) / 2 + ((a + 2) % 100) / 2, mem: 50, disk: 25, load: 1 }]);
    }
    // Closed steps (in the ring) stay apart too.
    for (let a = 0; a < 600; a++) h.add(`a${a}`, m(1), 2_000);
    expect(h.get('a300', 2_000)).toEqual([
      { t: new Date(1_000).toISOString(), cpu: 1, mem: 50, disk: 25, load: 1 },
      { t: new Date(2_000).toISOString(), cpu: 1, mem: 50, disk: 25, load: 1 },
    ]);
    expect(h.get('a599', 2_000)?.map((p) => p.cpu)).toEqual([50, 1]);
    h.remove('a300');
    h.add('new', m(9), 2_100);
    // The new agent may take a300's slot: it sees only its own point, none of a300's.
    expect(h.get('new', 2_100)).toEqual([{ t: new Date(2_000).toISOString(), cpu: 9, mem: 50, disk: 25, load: 1 }]);
    expect(h.get('a300', 2_100)).toBeNull();
    expect(h.size).toBe(600);
  });

  it('empties the steps skipped by a gap, also across ring laps, and survives the clock going back', () => {
    const h = new MetricsHistory({ points: 4, stepMs: 1000, maxAgents: 10 });
    for (const step of [0, 1, 2, 3]) h.add('a', m(step + 1), step * 1000);
    h.add('a', m(50), 6_000); // closes step 3; steps 4 and 5 get nothing
    h.add('a', m(60), 7_000); // closes step 6
    // Window 4..7: slots of steps 4 and 5 held steps 0 and 1 (an older lap), not read as 4 and 5.
    expect(h.get('a', 7_000)?.map((p) => [p.t, p.cpu])).toEqual([
      [new Date(6_000).toISOString(), 50],
      [new Date(7_000).toISOString(), 60],
    ]);
    // A gap longer than the ring: nothing of the old lap survives.
    h.add('a', m(70), 20_000);
    h.add('a', m(80), 21_000);
    expect(h.get('a', 21_000)?.map((p) => p.cpu)).toEqual([70, 80]);
    // The clock goes back one step: that step's point is rewritten, the later one stays.
    h.add('a', m(10), 20_500);
    h.add('a', m(90), 22_000);
    expect(h.get('a', 22_000)?.map((p) => p.cpu)).toEqual([10, 80, 90]);
    // Back past the ring: dropped, nothing else disturbed.
    h.add('a', m(5), 1_000);
    h.add('a', m(95), 22_500);
    expect(h.get('a', 22_500)?.map((p) => p.cpu)).toEqual([10, 80, 95]);
  });

  it('answers what a plain per-step average would, for random heartbeats and gaps', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const points = 5;
    const h = new MetricsHistory({ points, stepMs: 1000, maxAgents: 300 });
    const ref = new Map<string, Map<number, { cpu: number; mem: number; disk: number; load: number; n: number }>>();
    const r2 = (v: number) => Math.round(v * 100) / 100;
    let at = 1_000_000;
    for (let k = 0; k < 20_000; k++) {
      at += Math.floor(rnd() < 0.02 ? rnd() * 8000 : rnd() * 60);
      const id = `a${Math.floor(rnd() * 257)}`;
      const x = m(rnd() * 100, rnd() * 100, rnd() * 100, Math.round(rnd() * 400) / 4);
      h.add(id, x, at);
      const steps = ref.get(id) ?? new Map();
      ref.set(id, steps);
      const e = steps.get(Math.floor(at / 1000)) ?? { cpu: 0, mem: 0, disk: 0, load: 0, n: 0 };
      steps.set(Math.floor(at / 1000), {
        cpu: e.cpu + x.cpuPercent,
        mem: e.mem + x.memUsedBytes,
        disk: e.disk + x.diskUsedBytes,
        load: e.load + x.load[0],
        n: e.n + 1,
      });
      if (k % 97 === 0) {
        for (const [aid, st] of ref) {
          const now = at + Math.floor(rnd() * 3000);
          const want = [...st]
            .filter(([s]) => s > Math.floor(now / 1000) - points && s <= Math.floor(now / 1000))
            .sort((p, q) => p[0] - q[0])
            .map(([s, e]) => ({
              t: new Date(s * 1000).toISOString(),
              cpu: r2(e.cpu / e.n),
              mem: r2(e.mem / e.n),
              disk: r2(e.disk / e.n),
              load: r2(e.load / e.n),
            }));
          expect(h.get(aid, now)).toEqual(want);
        }
      }
    }
  });
});
