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
});
