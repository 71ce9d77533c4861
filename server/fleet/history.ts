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
/** Agents per slab chunk: the rings live in a few large typed arrays, not three small ones per agent. */
const CHUNK = 256;

/** One agent's place in the slabs, plus the step being filled. */
class Series {
  cur = -1;
  n = 0;
  lastStep = -1;
  constructor(readonly slot: number) {}
}

/**
 * The last hour of each agent's heartbeat metrics, in memory: one averaged point per step
 * (a minute by default) in a fixed ring per agent, so memory is bounded by `maxAgents` × points.
 * Agents past `maxAgents` get no history (said in the answer); an agent silent for the whole
 * window gives its slot back. Fed from the bus's `agent.metrics` (every node hears every agent).
 *
 * The rings are slots of shared slabs allocated CHUNK agents at a time (values Float32, step
 * numbers Int32, running sums Float64): per agent that is the data and one small object, without
 * the typed-array and ArrayBuffer objects and backing-store bookkeeping of three arrays each.
 */
export class MetricsHistory {
  private readonly series = new Map<string, Series>();
  private lastPrune = 0;
  /** Per chunk: points × FIELDS averages per slot. */
  private readonly values: Float32Array[] = [];
  /** Per chunk: the step number (time / stepMs) of each ring slot; -1 = empty. */
  private readonly steps: Int32Array[] = [];
  /** Per chunk: FIELDS running sums of the step being filled. */
  private readonly sums: Float64Array[] = [];
  private readonly free: number[] = [];
  private nextSlot = 0;

  constructor(private readonly o: { points: number; stepMs: number; maxAgents: number }) {}

  private allocSlot(): number {
    const slot = this.free.pop();
    if (slot !== undefined) return slot;
    if (this.nextSlot % CHUNK === 0) {
      this.values.push(new Float32Array(CHUNK * this.o.points * FIELDS));
      this.steps.push(new Int32Array(CHUNK * this.o.points).fill(-1));
      this.sums.push(new Float64Array(CHUNK * FIELDS));
    }
    return this.nextSlot++;
  }

  /** Gives a slot back, emptied (a later agent must not read this one's points). */
  private freeSlot(s: Series): void {
    const c = Math.floor(s.slot / CHUNK);
    const i = s.slot % CHUNK;
    this.steps[c]!.fill(-1, i * this.o.points, (i + 1) * this.o.points);
    this.sums[c]!.fill(0, i * FIELDS, (i + 1) * FIELDS);
    this.free.push(s.slot);
  }

  /** Takes one heartbeat's metrics of an agent, seen at `at` (epoch ms). */
  add(agentId: string, m: Metrics, at: number): void {
    let s = this.series.get(agentId);
    if (!s) {
      if (this.series.size >= this.o.maxAgents) this.prune(at);
      if (this.series.size >= this.o.maxAgents) return;
      this.series.set(agentId, (s = new Series(this.allocSlot())));
    }
    const step = Math.floor(at / this.o.stepMs);
    if (step !== s.cur) {
      this.close(s);
      s.cur = step;
    }
    const sum = this.sums[Math.floor(s.slot / CHUNK)]!;
    const o = (s.slot % CHUNK) * FIELDS;
    sum[o] = sum[o]! + m.cpuPercent;
    sum[o + 1] = sum[o + 1]! + (m.memTotalBytes ? (m.memUsedBytes / m.memTotalBytes) * 100 : 0);
    sum[o + 2] = sum[o + 2]! + (m.diskTotalBytes ? (m.diskUsedBytes / m.diskTotalBytes) * 100 : 0);
    sum[o + 3] = sum[o + 3]! + m.load[0];
    s.n++;
    s.lastStep = step;
  }

  /** Moves the step being filled into the ring. */
  private close(s: Series): void {
    if (s.cur < 0 || s.n === 0) return;
    const c = Math.floor(s.slot / CHUNK);
    const i = s.slot % CHUNK;
    const ring = s.cur % this.o.points;
    this.steps[c]![i * this.o.points + ring] = s.cur;
    const values = this.values[c]!;
    const sum = this.sums[c]!;
    const v = (i * this.o.points + ring) * FIELDS;
    for (let f = 0; f < FIELDS; f++) {
      values[v + f] = sum[i * FIELDS + f]! / s.n;
      sum[i * FIELDS + f] = 0;
    }
    s.n = 0;
  }

  /** Forgets agents not heard from for the whole window (at most once a step). */
  private prune(at: number): void {
    if (at - this.lastPrune < this.o.stepMs) return;
    this.lastPrune = at;
    const oldest = Math.floor(at / this.o.stepMs) - this.o.points + 1;
    for (const [id, s] of this.series) {
      if (s.lastStep >= oldest) continue;
      this.series.delete(id);
      this.freeSlot(s);
    }
  }

  remove(agentId: string): void {
    const s = this.series.get(agentId);
    if (!s) return;
    this.series.delete(agentId);
    this.freeSlot(s);
  }

  /** The points inside the window ending now, oldest first (the step being filled included); null when none is kept. */
  get(agentId: string, now = Date.now()): HistoryPoint[] | null {
    const s = this.series.get(agentId);
    if (!s) return null;
    const c = Math.floor(s.slot / CHUNK);
    const i = s.slot % CHUNK;
    const values = this.values[c]!;
    const steps = this.steps[c]!;
    const sum = this.sums[c]!;
    const nowStep = Math.floor(now / this.o.stepMs);
    const out: HistoryPoint[] = [];
    const point = (step: number, v: (f: number) => number) =>
      out.push({
        t: new Date(step * this.o.stepMs).toISOString(),
        cpu: round(v(0)),
        mem: round(v(1)),
        disk: round(v(2)),
        load: round(v(3)),
      });
    for (let step = nowStep - this.o.points + 1; step <= nowStep; step++) {
      if (step === s.cur && s.n > 0) point(step, (f) => sum[i * FIELDS + f]! / s.n);
      else {
        const ring = ((step % this.o.points) + this.o.points) % this.o.points;
        if (step >= 0 && steps[i * this.o.points + ring] === step) point(step, (f) => values[(i * this.o.points + ring) * FIELDS + f]!);
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
