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
/** Per slot, in `meta`: the step being filled, heartbeats in it, the last step written to the ring, the last step heard. */
const CUR = 0;
const N = 1;
const LAST = 2;
const HEARD = 3;
const META = 4;
/** A ring point with no value (its step had no heartbeat, or the slot is new). */
const EMPTY = 0xffff;
/** CPU, memory and disk are kept in hundredths of a percent (what the answer is rounded to); above this they are clamped. */
const PCT_MAX = 0xfffe;

/**
 * The last hour of each agent's heartbeat metrics, in memory: one averaged point per step
 * (a minute by default) in a fixed ring per agent, so memory is bounded by `maxAgents` × points.
 * Agents past `maxAgents` get no history (said in the answer); an agent silent for the whole
 * window gives its slot back. Fed from the bus's `agent.metrics` (every node hears every agent).
 *
 * The rings are slots of shared slabs allocated CHUNK agents at a time, and a slot's state is
 * four integers in a slab too (no object per agent). A ring point is CPU, memory and disk in
 * hundredths of a percent (Uint16: the answer is rounded to hundredths anyway) and load1
 * (Float32): 10 bytes. The ring holds no step numbers: slot `step % points` holds the latest
 * written step with that remainder, and the steps skipped between two written ones are emptied
 * as the later one is written, so a point is valid exactly when its step lies within `points`
 * of the last written step.
 */
export class MetricsHistory {
  /** Agent id → slot. */
  private readonly series = new Map<string, number>();
  private lastPrune = 0;
  /** Per chunk: points × 3 (CPU, memory, disk) hundredths of a percent per slot; EMPTY = no point. */
  private readonly pct: Uint16Array[] = [];
  /** Per chunk: points load1 averages per slot. */
  private readonly load: Float32Array[] = [];
  /** Per chunk: FIELDS running sums of the step being filled. */
  private readonly sums: Float64Array[] = [];
  /** Per chunk: META integers per slot (CUR, N, LAST, HEARD). */
  private readonly meta: Int32Array[] = [];
  private readonly free: number[] = [];
  private nextSlot = 0;

  constructor(private readonly o: { points: number; stepMs: number; maxAgents: number }) {}

  private allocSlot(): number {
    const reused = this.free.pop();
    if (reused !== undefined) return reused;
    if (this.nextSlot % CHUNK === 0) {
      this.pct.push(new Uint16Array(CHUNK * this.o.points * 3).fill(EMPTY));
      this.load.push(new Float32Array(CHUNK * this.o.points));
      this.sums.push(new Float64Array(CHUNK * FIELDS));
      this.meta.push(new Int32Array(CHUNK * META).fill(-1));
    }
    const slot = this.nextSlot++;
    this.meta[Math.floor(slot / CHUNK)]![(slot % CHUNK) * META + N] = 0;
    return slot;
  }

  /** Gives a slot back, emptied (a later agent must not read this one's points). */
  private freeSlot(slot: number): void {
    const c = Math.floor(slot / CHUNK);
    const i = slot % CHUNK;
    this.pct[c]!.fill(EMPTY, i * this.o.points * 3, (i + 1) * this.o.points * 3);
    this.sums[c]!.fill(0, i * FIELDS, (i + 1) * FIELDS);
    const meta = this.meta[c]!;
    meta.fill(-1, i * META, (i + 1) * META);
    meta[i * META + N] = 0;
    this.free.push(slot);
  }

  /** Takes one heartbeat's metrics of an agent, seen at `at` (epoch ms). */
  add(agentId: string, m: Metrics, at: number): void {
    let slot = this.series.get(agentId);
    if (slot === undefined) {
      if (this.series.size >= this.o.maxAgents) this.prune(at);
      if (this.series.size >= this.o.maxAgents) return;
      this.series.set(agentId, (slot = this.allocSlot()));
    }
    const c = Math.floor(slot / CHUNK);
    const i = slot % CHUNK;
    const meta = this.meta[c]!;
    const mo = i * META;
    const step = Math.floor(at / this.o.stepMs);
    if (step !== meta[mo + CUR]) {
      this.close(c, i);
      meta[mo + CUR] = step;
    }
    const sum = this.sums[c]!;
    const o = i * FIELDS;
    sum[o] = sum[o]! + m.cpuPercent;
    sum[o + 1] = sum[o + 1]! + (m.memTotalBytes ? (m.memUsedBytes / m.memTotalBytes) * 100 : 0);
    sum[o + 2] = sum[o + 2]! + (m.diskTotalBytes ? (m.diskUsedBytes / m.diskTotalBytes) * 100 : 0);
    sum[o + 3] = sum[o + 3]! + m.load[0];
    meta[mo + N]!++;
    meta[mo + HEARD] = step;
  }

  /** Moves the step being filled (of slot `i` of chunk `c`) into the ring. */
  private close(c: number, i: number): void {
    const meta = this.meta[c]!;
    const mo = i * META;
    const cur = meta[mo + CUR]!;
    const n = meta[mo + N]!;
    if (cur < 0 || n === 0) return;
    const points = this.o.points;
    const pct = this.pct[c]!;
    const sum = this.sums[c]!;
    const last = meta[mo + LAST]!;
    let write = true;
    if (cur > last) {
      // The steps skipped since the last written one hold nothing (their slots may hold older laps).
      for (let step = Math.max(last + 1, cur - points + 1); step < cur; step++) pct[(i * points + (step % points)) * 3] = EMPTY;
      meta[mo + LAST] = cur;
    } else if (cur <= last - points) {
      // The clock went back past the ring: nothing to keep.
      write = false;
    }
    if (write) {
      const ring = cur % points;
      const p = (i * points + ring) * 3;
      for (let f = 0; f < 3; f++) pct[p + f] = Math.min(PCT_MAX, Math.max(0, Math.round((sum[i * FIELDS + f]! / n) * 100)));
      this.load[c]![i * points + ring] = sum[i * FIELDS + 3]! / n;
    }
    sum.fill(0, i * FIELDS, (i + 1) * FIELDS);
    meta[mo + N] = 0;
  }

  /** Forgets agents not heard from for the whole window (at most once a step). */
  private prune(at: number): void {
    if (at - this.lastPrune < this.o.stepMs) return;
    this.lastPrune = at;
    const oldest = Math.floor(at / this.o.stepMs) - this.o.points + 1;
    for (const [id, slot] of this.series) {
      if (this.meta[Math.floor(slot / CHUNK)]![(slot % CHUNK) * META + HEARD]! >= oldest) continue;
      this.series.delete(id);
      this.freeSlot(slot);
    }
  }

  remove(agentId: string): void {
    const slot = this.series.get(agentId);
    if (slot === undefined) return;
    this.series.delete(agentId);
    this.freeSlot(slot);
  }

  /** The points inside the window ending now, oldest first (the step being filled included); null when none is kept. */
  get(agentId: string, now = Date.now()): HistoryPoint[] | null {
    const slot = this.series.get(agentId);
    if (slot === undefined) return null;
    const c = Math.floor(slot / CHUNK);
    const i = slot % CHUNK;
    const points = this.o.points;
    const pct = this.pct[c]!;
    const load = this.load[c]!;
    const sum = this.sums[c]!;
    const meta = this.meta[c]!;
    const cur = meta[i * META + CUR]!;
    const n = meta[i * META + N]!;
    const last = meta[i * META + LAST]!;
    const nowStep = Math.floor(now / this.o.stepMs);
    const out: HistoryPoint[] = [];
    const t = (step: number) => new Date(step * this.o.stepMs).toISOString();
    for (let step = nowStep - points + 1; step <= nowStep; step++) {
      if (step === cur && n > 0) {
        const s = i * FIELDS;
        out.push({ t: t(step), cpu: round(sum[s]! / n), mem: round(sum[s + 1]! / n), disk: round(sum[s + 2]! / n), load: round(sum[s + 3]! / n) });
      } else if (step >= 0 && step <= last && step > last - points) {
        const r = i * points + (step % points);
        if (pct[r * 3] === EMPTY) continue;
        out.push({ t: t(step), cpu: pct[r * 3]! / 100, mem: pct[r * 3 + 1]! / 100, disk: pct[r * 3 + 2]! / 100, load: round(load[r]!) });
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
