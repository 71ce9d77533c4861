import type { WaveRunState } from '../../protocol/index.js';
import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';
import { ACTIVE_RUN_STATES, type WaveRun, type WaveStore, type WaveTarget } from './engine.js';

/** A run row as stored: the engine's fields plus who created it and when. */
export interface StoredRun extends WaveRun {
  createdBy: string;
  createdAt: number;
}

type Cols = Record<string, unknown>;
const num = (v: unknown) => (v == null ? null : Number(v));
const str = (v: unknown) => (v == null ? null : String(v));

/** The columns every run table has (rollouts, file_distributions), read. */
export function runFields<S extends WaveRunState>(r: Cols): StoredRun & { state: S } {
  return {
    id: String(r['id']),
    waveSpec: parseJson(r['waves'], ['100%']),
    maxFailures: Number(r['max_failures']),
    state: String(r['state']) as S,
    reason: str(r['reason']),
    currentWave: Number(r['current_wave']),
    failureBase: Number(r['failure_base']),
    soakSeconds: Number(r['soak_seconds'] ?? 0),
    approval: Boolean(r['approval']),
    waveDoneAt: num(r['wave_done_at']),
    createdBy: String(r['created_by']),
    createdAt: Number(r['created_at']),
    updatedAt: Number(r['updated_at']),
    finishedAt: num(r['finished_at']),
  };
}

/** The columns every run table has, written (`reasonMax`: the reason column's length). */
export function runColumns(r: StoredRun, reasonMax: number): Cols {
  return {
    id: r.id,
    waves: JSON.stringify(r.waveSpec),
    max_failures: r.maxFailures,
    state: r.state,
    reason: r.reason?.slice(0, reasonMax) ?? null,
    current_wave: r.currentWave,
    failure_base: r.failureBase,
    soak_seconds: r.soakSeconds,
    approval: r.approval,
    wave_done_at: r.waveDoneAt,
    created_by: r.createdBy,
    created_at: r.createdAt,
    updated_at: r.updatedAt,
    finished_at: r.finishedAt,
  };
}

/** The columns every target table has (rollout_targets, file_distribution_targets), read. */
export function targetFields<S extends string>(r: Cols): WaveTarget<S> {
  return {
    agentId: String(r['agent_id']),
    agentName: String(r['agent_name']),
    wave: Number(r['wave']),
    state: String(r['state']) as S,
    reason: str(r['reason']),
    startedAt: num(r['started_at']),
    updatedAt: Number(r['updated_at']),
  };
}

/** The columns every target table has, written (the run's key column is the table's own). */
export function targetColumns(t: WaveTarget, reasonMax: number): Cols {
  return {
    agent_id: t.agentId,
    agent_name: t.agentName,
    wave: t.wave,
    state: t.state,
    reason: t.reason?.slice(0, reasonMax) ?? null,
    started_at: t.startedAt,
    updated_at: t.updatedAt,
  };
}

/** Where a kind of run lives and how its rows map to columns (the shared ones through the helpers above). */
export interface WaveTables<R extends StoredRun, T extends WaveTarget> {
  runs: string;
  targets: string;
  /** The targets' column naming their run (`rollout_id`). */
  runKey: string;
  runFrom(r: Cols): R;
  runCols(r: R): Cols;
  targetFrom(r: Cols): T;
  /** Every column of a target but its run key and agent id. */
  targetCols(t: T): Cols;
  /** The run a target belongs to. */
  runOf(t: T): string;
}

/**
 * The queries every kind of run in waves makes (insert with its targets, write-through of run and
 * target changes, reads, the active runs to restore): the engine's store (WaveStore), one per kind.
 */
export class WaveRepo<R extends StoredRun, T extends WaveTarget> implements WaveStore<R, T> {
  constructor(
    private readonly db: Db,
    private readonly t: WaveTables<R, T>,
  ) {}

  async insert(row: R, targets: T[]): Promise<void> {
    const { runs, targets: table, runKey } = this.t;
    await this.db.transaction(async (trx) => {
      await trx(runs).insert(this.t.runCols(row));
      for (let i = 0; i < targets.length; i += 500) {
        await trx(table).insert(targets.slice(i, i + 500).map((x) => ({ [runKey]: row.id, agent_id: x.agentId, ...this.t.targetCols(x) })));
      }
    });
  }

  async updateRun(row: R): Promise<void> {
    const { id: _id, ...cols } = this.t.runCols(row);
    await this.db(this.t.runs).where({ id: row.id }).update(cols);
  }

  async updateTarget(x: T): Promise<void> {
    await this.db(this.t.targets)
      .where({ [this.t.runKey]: this.t.runOf(x), agent_id: x.agentId })
      .update(this.t.targetCols(x));
  }

  async getRun(id: string): Promise<R | null> {
    const r = await this.db(this.t.runs).where({ id }).first();
    return r ? this.t.runFrom(r) : null;
  }

  /** Newest first (`where`: column values every listed run has, e.g. its file). */
  async list(limit: number, offset: number, where: Cols = {}): Promise<{ items: R[]; total: number }> {
    const [{ n }] = (await this.db(this.t.runs).where(where).count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db(this.t.runs).where(where).orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).offset(offset);
    return { items: rows.map((r) => this.t.runFrom(r)), total: Number(n) };
  }

  async targets(id: string): Promise<T[]> {
    return (
      await this.db(this.t.targets)
        .where({ [this.t.runKey]: id })
        .orderBy('wave')
        .orderBy('agent_name')
    ).map((r) => this.t.targetFrom(r));
  }

  async getTarget(id: string, agentId: string): Promise<T | null> {
    const r = await this.db(this.t.targets)
      .where({ [this.t.runKey]: id, agent_id: agentId })
      .first();
    return r ? this.t.targetFrom(r) : null;
  }

  /** Runs in an active state: the ones to drive (restored when the `waves` lease is taken). */
  async active(): Promise<R[]> {
    return (await this.db(this.t.runs).whereIn('state', ACTIVE_RUN_STATES)).map((r) => this.t.runFrom(r));
  }
}
