import type { ActiveDistribution, ActiveRollout, AttentionHost, Dashboard, ExecutionTrend, TrendBucket } from '../../protocol/index.js';
import type { Db } from '../db/db.js';
import type { AgentRecord } from '../fleet/repo.js';
import { ACTIVE_RUN_STATES } from '../waves/engine.js';

const HOUR_MS = 3_600_000;
/** Execution states counted as failures in the dashboard (a run that did not succeed and was not stopped by a person). */
export const FAILED_STATES = ['failed', 'timeout', 'lost', 'policy_denied'] as const;
const ROLLOUT_DONE = new Set(['succeeded', 'failed', 'rolled_back', 'skipped']);
const ROLLOUT_FAILED = new Set(['failed', 'rolled_back']);
const DIST_DONE = new Set(['applied', 'unchanged', 'removed', 'failed', 'skipped']);
const iso = (t: number | null | undefined) => (t == null ? null : new Date(t).toISOString());

/**
 * The `n` greatest items by `key` in one pass, without sorting the whole input (a 100,000-agent
 * fleet is scanned, never copied): insertion into a sorted array of at most `n`.
 */
export function topN<T>(items: Iterable<T>, n: number, key: (t: T) => number): { total: number; top: T[] } {
  const top: { t: T; k: number }[] = [];
  let total = 0;
  for (const t of items) {
    total++;
    const k = key(t);
    if (top.length === n && k <= top[n - 1]!.k) continue;
    let i = top.length;
    while (i > 0 && top[i - 1]!.k < k) i--;
    top.splice(i, 0, { t, k });
    if (top.length > n) top.pop();
  }
  return { total, top: top.map((x) => x.t) };
}

function* matching(agents: Iterable<AgentRecord>, pred: (a: AgentRecord) => boolean): Generator<AgentRecord> {
  for (const a of agents) if (a.revokedAt == null && pred(a)) yield a;
}

const diskPercent = (a: AgentRecord) => {
  const m = a.metrics;
  return m && m.diskTotalBytes > 0 ? (m.diskUsedBytes / m.diskTotalBytes) * 100 : 0;
};

/**
 * What the dashboard shows, computed where it is cheap: presence and disk from the in-memory
 * fleet (one scan, the first `max` kept), failed runs, rollouts and distributions aggregated in SQL
 * (indexed on executions.finished_at and the states). No answer grows with the fleet.
 */
export class DashboardReadModel {
  constructor(
    private readonly db: Db,
    private readonly agents: () => Iterable<AgentRecord>,
    private readonly opts: { diskPercent: number; max: number },
  ) {}

  async dashboard(now = Date.now()): Promise<Dashboard> {
    const { max } = this.opts;
    const failedWindowHours = 24;
    const offline = topN(
      matching(this.agents(), (a) => a.status === 'offline'),
      max,
      (a) => a.lastSeenAt ?? 0,
    );
    const disk = topN(
      matching(this.agents(), (a) => a.status === 'online' && diskPercent(a) >= this.opts.diskPercent),
      max,
      diskPercent,
    );
    const [failed, rollouts, distributions] = await Promise.all([
      this.failedHosts(now - failedWindowHours * HOUR_MS, max),
      this.activeRollouts(max),
      this.activeDistributions(max),
    ]);
    return {
      attention: {
        offline: {
          total: offline.total,
          items: offline.top.map((a): AttentionHost => ({
            agentId: a.id,
            name: a.name,
            at: iso(a.lastSeenAt),
            detail: a.lastSeenAt == null ? 'never connected' : 'offline',
          })),
        },
        disk: {
          total: disk.total,
          items: disk.top.map((a): AttentionHost => {
            const p = Math.round(diskPercent(a) * 10) / 10;
            return { agentId: a.id, name: a.name, at: iso(a.lastSeenAt), diskPercent: p, detail: `disk ${p}% full` };
          }),
        },
        failed,
      },
      diskPercent: this.opts.diskPercent,
      failedWindowHours,
      rollouts,
      distributions,
    };
  }

  /** Agents with failed runs since `since`: how many in all, and the `max` latest with their count and latest task. */
  private async failedHosts(since: number, max: number): Promise<{ total: number; items: AttentionHost[] }> {
    const base = () =>
      this.db('executions')
        .where('finished_at', '>=', since)
        .whereIn('status', [...FAILED_STATES]);
    const [[totalRow], rows] = await Promise.all([
      (async () => (await base().countDistinct({ n: 'agent_id' })) as { n: number | string }[])(),
      (async () =>
        (await base()
          .select('agent_id')
          .max({ name: 'agent_name', last: 'finished_at' })
          .count({ n: '*' })
          .groupBy('agent_id')
          .orderBy('last', 'desc')
          .limit(max)) as unknown as { agent_id: string; name: string; last: number | string; n: number | string }[])(),
    ]);
    // The task of each one's latest failure: its rows at that time (one per agent, ties aside).
    const latest = new Map<string, string>();
    if (rows.length) {
      const tasks = (await this.db('executions')
        .select('agent_id', 'task_id')
        .whereIn('status', [...FAILED_STATES])
        .where((q) => {
          for (const r of rows) void q.orWhere((w) => void w.where('agent_id', r.agent_id).where('finished_at', Number(r.last)));
        })) as { agent_id: string; task_id: string }[];
      for (const t of tasks) if (!latest.has(t.agent_id)) latest.set(t.agent_id, t.task_id);
    }
    return {
      total: Number(totalRow?.n ?? 0),
      items: rows.map((r) => {
        const n = Number(r.n);
        return {
          agentId: r.agent_id,
          name: r.name,
          at: iso(Number(r.last)),
          failures: n,
          taskId: latest.get(r.agent_id) ?? null,
          detail: `${n} failed run${n === 1 ? '' : 's'}`,
        };
      }),
    };
  }

  private async activeRollouts(max: number): Promise<ActiveRollout[]> {
    const rs = (await this.db('rollouts')
      .select('id', 'version', 'state', 'created_by', 'created_at')
      .whereIn('state', ACTIVE_RUN_STATES)
      .orderBy('created_at', 'desc')
      .limit(max)) as { id: string; version: string; state: string; created_by: string; created_at: number | string }[];
    const counts = await this.stateCounts(
      'rollout_targets',
      'rollout_id',
      rs.map((r) => r.id),
    );
    return rs.map((r) => ({
      id: r.id,
      version: r.version,
      state: r.state,
      createdBy: r.created_by,
      createdAt: iso(Number(r.created_at))!,
      ...progress(counts.get(r.id), ROLLOUT_DONE, ROLLOUT_FAILED),
    }));
  }

  private async activeDistributions(max: number): Promise<ActiveDistribution[]> {
    const rs = (await this.db('file_distributions as d')
      .join('managed_files as f', 'f.id', 'd.file_id')
      .select('d.id', 'd.file_id', 'f.path', 'd.revision', 'd.kind', 'd.state', 'd.created_by', 'd.created_at')
      .whereIn('d.state', ACTIVE_RUN_STATES)
      .orderBy('d.created_at', 'desc')
      .limit(max)) as {
      id: string;
      file_id: string;
      path: string;
      revision: number | null;
      kind: string;
      state: string;
      created_by: string;
      created_at: number | string;
    }[];
    const counts = await this.stateCounts(
      'file_distribution_targets',
      'distribution_id',
      rs.map((r) => r.id),
    );
    return rs.map((r) => ({
      id: r.id,
      fileId: r.file_id,
      path: r.path,
      revision: r.revision == null ? null : Number(r.revision),
      kind: r.kind,
      state: r.state,
      createdBy: r.created_by,
      createdAt: iso(Number(r.created_at))!,
      ...progress(counts.get(r.id), DIST_DONE, new Set(['failed'])),
    }));
  }

  /** Targets per state of each parent (one grouped query). */
  private async stateCounts(table: string, parent: string, ids: string[]): Promise<Map<string, Map<string, number>>> {
    const out = new Map<string, Map<string, number>>();
    if (ids.length === 0) return out;
    const rows = (await this.db(table).select({ p: parent }, 'state').count({ n: '*' }).whereIn(parent, ids).groupBy(parent, 'state')) as unknown as {
      p: string;
      state: string;
      n: number | string;
    }[];
    for (const r of rows) {
      let m = out.get(r.p);
      if (!m) out.set(r.p, (m = new Map()));
      m.set(r.state, Number(r.n));
    }
    return out;
  }

  /**
   * Executions that ended in each of the last `hours` hours (UTC), by outcome: one grouped query on
   * executions.finished_at. The hour is computed as `finished_at - finished_at % 3600000`, which
   * SQLite and MySQL evaluate alike on integers (no date functions, which differ).
   */
  async trend(hours: number, now = Date.now()): Promise<ExecutionTrend> {
    const first = Math.floor(now / HOUR_MS) * HOUR_MS - (hours - 1) * HOUR_MS;
    const rows = (await this.db('executions')
      .select(this.db.raw(`(finished_at - (finished_at % ${HOUR_MS})) as bucket`), 'status')
      .count({ n: '*' })
      .where('finished_at', '>=', first)
      .whereIn('status', ['succeeded', 'cancelled', ...FAILED_STATES])
      .groupBy('bucket', 'status')) as unknown as { bucket: number | string; status: string; n: number | string }[];
    const buckets: TrendBucket[] = [];
    const at = new Map<number, TrendBucket>();
    for (let i = 0; i < hours; i++) {
      const start = first + i * HOUR_MS;
      const b = { start: new Date(start).toISOString(), succeeded: 0, failed: 0, cancelled: 0 };
      buckets.push(b);
      at.set(start, b);
    }
    for (const r of rows) {
      const b = at.get(Number(r.bucket));
      if (!b) continue; // finished "in the future" (a clock step): not in the window
      const n = Number(r.n);
      if (r.status === 'succeeded') b.succeeded += n;
      else if (r.status === 'cancelled') b.cancelled += n;
      else b.failed += n;
    }
    return { hours, bucketMs: HOUR_MS, buckets };
  }
}

function progress(counts: Map<string, number> | undefined, done: Set<string>, failed: Set<string>): { total: number; done: number; failed: number } {
  let total = 0;
  let d = 0;
  let f = 0;
  for (const [state, n] of counts ?? []) {
    total += n;
    if (done.has(state)) d += n;
    if (failed.has(state)) f += n;
  }
  return { total, done: d, failed: f };
}
