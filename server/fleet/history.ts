import { MetricsHistoryView, type Metrics } from '../../protocol/index.js';
import { ApiRouter } from '../http/api-router.js';
import { ApiError } from '../http/errors.js';

/** One point of an agent's history: the averages over one step (CPU, memory and disk in %, load1). */
export interface HistoryPoint {
  t: string;
  cpu: number;
  mem: number;
  disk: number;
  load: number;
}

const FIELDS = 4;

/** One agent's ring of per-step averages, plus the step being filled. */
class Series {
  readonly values: Float32Array;
  /** Step number (time / stepMs) of each slot; -1 = empty. */
  readonly steps: Int32Array;
  cur = -1;
  readonly sum = new Float64Array(FIELDS);
  n = 0;
  lastStep = -1;
  constructor(points: number) {
    this.values = new Float32Array(points * FIELDS);
    this.steps = new Int32Array(points).fill(-1);
  }
}

/**
 * The last hour of each agent's heartbeat metrics, in memory: one averaged point per step
 * (a minute by default) in a fixed ring per agent, so memory is bounded by `maxAgents` × points.
 * Agents past `maxAgents` get no history (said in the answer); an agent silent for the whole
 * window gives its slot back. Fed from the bus's `agent.metrics` (every node hears every agent).
 */
export class MetricsHistory {
  private readonly series = new Map<string, Series>();
  private lastPrune = 0;

  constructor(private readonly o: { points: number; stepMs: number; maxAgents: number }) {}

  /** Takes one heartbeat's metrics of an agent, seen at `at` (epoch ms). */
  add(agentId: string, m: Metrics, at: number): void {
    let s = this.series.get(agentId);
    if (!s) {
      if (this.series.size >= this.o.maxAgents) this.prune(at);
      if (this.series.size >= this.o.maxAgents) return;
      this.series.set(agentId, (s = new Series(this.o.points)));
    }
    const step = Math.floor(at / this.o.stepMs);
    if (step !== s.cur) {
      this.close(s);
      s.cur = step;
    }
    s.sum[0]! += m.cpuPercent;
    s.sum[1]! += m.memTotalBytes ? (m.memUsedBytes / m.memTotalBytes) * 100 : 0;
    s.sum[2]! += m.diskTotalBytes ? (m.diskUsedBytes / m.diskTotalBytes) * 100 : 0;
    s.sum[3]! += m.load[0];
    s.n++;
    s.lastStep = step;
  }

  /** Moves the step being filled into the ring. */
  private close(s: Series): void {
    if (s.cur < 0 || s.n === 0) return;
    const slot = s.cur % this.o.points;
    s.steps[slot] = s.cur;
    for (let i = 0; i < FIELDS; i++) s.values[slot * FIELDS + i] = s.sum[i]! / s.n;
    s.sum.fill(0);
    s.n = 0;
  }

  /** Forgets agents not heard from for the whole window (at most once a step). */
  private prune(at: number): void {
    if (at - this.lastPrune < this.o.stepMs) return;
    this.lastPrune = at;
    const oldest = Math.floor(at / this.o.stepMs) - this.o.points + 1;
    for (const [id, s] of this.series) if (s.lastStep < oldest) this.series.delete(id);
  }

  remove(agentId: string): void {
    this.series.delete(agentId);
  }

  /** The points inside the window ending now, oldest first (the step being filled included); null when none is kept. */
  get(agentId: string, now = Date.now()): HistoryPoint[] | null {
    const s = this.series.get(agentId);
    if (!s) return null;
    const nowStep = Math.floor(now / this.o.stepMs);
    const out: HistoryPoint[] = [];
    const point = (step: number, v: (i: number) => number) =>
      out.push({
        t: new Date(step * this.o.stepMs).toISOString(),
        cpu: round(v(0)),
        mem: round(v(1)),
        disk: round(v(2)),
        load: round(v(3)),
      });
    for (let step = nowStep - this.o.points + 1; step <= nowStep; step++) {
      if (step === s.cur && s.n > 0) point(step, (i) => s.sum[i]! / s.n);
      else {
        const slot = ((step % this.o.points) + this.o.points) % this.o.points;
        if (s.steps[slot] === step) point(step, (i) => s.values[slot * FIELDS + i]!);
      }
    }
    return out;
  }

  get size(): number {
    return this.series.size;
  }
}

const round = (v: number) => Math.round(v * 100) / 100;

/** GET /api/agents/:id/metrics/history: the agent's last hour, one point a step. */
export function metricsHistoryRoutes(
  history: MetricsHistory,
  known: (id: string) => boolean,
  o: { stepMs: number; points: number; maxAgents: number },
): ApiRouter {
  const r = new ApiRouter();
  r.get(
    '/agents/:id/metrics/history',
    {
      summary: "The last hour of an agent's CPU, memory, disk and load",
      description: "Averaged points kept in the server's memory (MUSTER_METRICS_HISTORY_*).",
      role: 'viewer',
      responses: { 200: MetricsHistoryView },
    },
    (req, res) => {
      const id = String(req.params['id']);
      if (!known(id)) throw new ApiError('not_found', 'no such agent');
      const points = history.get(id);
      res.json({
        stepSec: o.stepMs / 1000,
        windowSec: (o.stepMs * o.points) / 1000,
        points: points ?? [],
        ...(points === null
          ? {
              note: `no history kept for this agent yet (heartbeats add it; the server keeps it for at most ${o.maxAgents} agents, MUSTER_METRICS_HISTORY_AGENTS)`,
            }
          : {}),
      });
    },
  );
  return r;
}
