import type { ArtifactView, RolloutState, UpdateState } from '../../protocol/index.js';
import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';
import { ACTIVE_RUN_STATES } from '../waves/engine.js';

export interface ArtifactRow {
  id: string;
  version: string;
  filename: string;
  arch: string | null;
  size: number;
  sha256: string;
  signature: string;
  createdBy: string;
  createdAt: number;
  stable: boolean;
  stableBy: string | null;
  stableAt: number | null;
}

export interface RolloutRow {
  id: string;
  artifactId: string | null;
  version: string;
  url: string | null;
  size: number;
  sha256: string;
  signature: string;
  selector: string;
  waveSpec: (number | string)[];
  maxFailures: number;
  allowDowngrade: boolean;
  state: RolloutState;
  reason: string | null;
  currentWave: number;
  failureBase: number;
  soakSeconds: number;
  approval: boolean;
  waveDoneAt: number | null;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  finishedAt: number | null;
}

export interface TargetRow {
  rolloutId: string;
  agentId: string;
  agentName: string;
  wave: number;
  state: UpdateState;
  reason: string | null;
  fromVersion: string | null;
  startedAt: number | null;
  updatedAt: number;
}

const iso = (t: number) => new Date(t).toISOString();

export function artifactView(a: ArtifactRow): ArtifactView {
  return {
    id: a.id,
    version: a.version,
    filename: a.filename,
    arch: a.arch,
    size: a.size,
    sha256: a.sha256,
    signature: a.signature,
    createdBy: a.createdBy,
    createdAt: iso(a.createdAt),
    stable: a.stable,
    stableBy: a.stableBy,
    stableAt: a.stableAt == null ? null : iso(a.stableAt),
  };
}

const artifactFrom = (r: Record<string, unknown>): ArtifactRow => ({
  id: String(r['id']),
  version: String(r['version']),
  filename: String(r['filename']),
  arch: (r['arch'] as string | null) ?? null,
  size: Number(r['size']),
  sha256: String(r['sha256']),
  signature: String(r['signature']),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
  stable: Boolean(r['stable']),
  stableBy: (r['stable_by'] as string | null) ?? null,
  stableAt: r['stable_at'] == null ? null : Number(r['stable_at']),
});

const rolloutFrom = (r: Record<string, unknown>): RolloutRow => ({
  id: String(r['id']),
  artifactId: (r['artifact_id'] as string | null) ?? null,
  version: String(r['version']),
  url: (r['url'] as string | null) ?? null,
  size: Number(r['size']),
  sha256: String(r['sha256']),
  signature: String(r['signature']),
  selector: String(r['selector']),
  waveSpec: parseJson(r['waves'], ['100%']),
  maxFailures: Number(r['max_failures']),
  allowDowngrade: Boolean(r['allow_downgrade']),
  state: String(r['state']) as RolloutState,
  reason: (r['reason'] as string | null) ?? null,
  currentWave: Number(r['current_wave']),
  failureBase: Number(r['failure_base']),
  soakSeconds: Number(r['soak_seconds'] ?? 0),
  approval: Boolean(r['approval']),
  waveDoneAt: r['wave_done_at'] == null ? null : Number(r['wave_done_at']),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
  updatedAt: Number(r['updated_at']),
  finishedAt: r['finished_at'] == null ? null : Number(r['finished_at']),
});

const targetFrom = (r: Record<string, unknown>): TargetRow => ({
  rolloutId: String(r['rollout_id']),
  agentId: String(r['agent_id']),
  agentName: String(r['agent_name']),
  wave: Number(r['wave']),
  state: String(r['state']) as UpdateState,
  reason: (r['reason'] as string | null) ?? null,
  fromVersion: (r['from_version'] as string | null) ?? null,
  startedAt: r['started_at'] == null ? null : Number(r['started_at']),
  updatedAt: Number(r['updated_at']),
});

const rolloutCols = (r: RolloutRow) => ({
  id: r.id,
  artifact_id: r.artifactId,
  version: r.version,
  url: r.url,
  size: r.size,
  sha256: r.sha256,
  signature: r.signature,
  selector: r.selector,
  waves: JSON.stringify(r.waveSpec),
  max_failures: r.maxFailures,
  allow_downgrade: r.allowDowngrade,
  state: r.state,
  reason: r.reason?.slice(0, 512) ?? null,
  current_wave: r.currentWave,
  failure_base: r.failureBase,
  soak_seconds: r.soakSeconds,
  approval: r.approval,
  wave_done_at: r.waveDoneAt,
  created_by: r.createdBy,
  created_at: r.createdAt,
  updated_at: r.updatedAt,
  finished_at: r.finishedAt,
});

const targetCols = (t: TargetRow) => ({
  rollout_id: t.rolloutId,
  agent_id: t.agentId,
  agent_name: t.agentName,
  wave: t.wave,
  state: t.state,
  reason: t.reason,
  from_version: t.fromVersion,
  started_at: t.startedAt,
  updated_at: t.updatedAt,
});

/** Database access for artifacts, rollouts and rollout targets. */
export class UpdateRepo {
  constructor(private readonly db: Db) {}

  async insertArtifact(a: ArtifactRow): Promise<void> {
    await this.db('artifacts').insert({
      id: a.id,
      version: a.version,
      filename: a.filename,
      arch: a.arch,
      size: a.size,
      sha256: a.sha256,
      signature: a.signature,
      created_by: a.createdBy,
      created_at: a.createdAt,
      stable: a.stable,
      stable_by: a.stableBy,
      stable_at: a.stableAt,
    });
  }

  /** Marks or unmarks a package stable. */
  async setStable(id: string, stable: boolean, by: string, at: number): Promise<void> {
    await this.db('artifacts')
      .where({ id })
      .update(stable ? { stable: true, stable_by: by, stable_at: at } : { stable: false, stable_by: null, stable_at: null });
  }

  async getArtifact(id: string): Promise<ArtifactRow | null> {
    const r = await this.db('artifacts').where({ id }).first();
    return r ? artifactFrom(r) : null;
  }

  /**
   * What `latest` means (optionally for one arch): the newest package an admin marked stable, or
   * else the newest one a rollout completed with (succeeded), never simply the last upload.
   */
  async latestArtifact(arch?: string): Promise<{ artifact: ArtifactRow | null; source: 'stable' | 'rollout' | 'none'; uploaded: number }> {
    const scoped = () => {
      const q = this.db('artifacts');
      if (arch) q.where('artifacts.arch', arch);
      return q;
    };
    const [{ n }] = (await scoped().count({ n: '*' })) as [{ n: number | string }];
    const stable = await scoped().where('artifacts.stable', true).orderBy('artifacts.created_at', 'desc').orderBy('artifacts.id', 'desc').first();
    if (stable) return { artifact: artifactFrom(stable), source: 'stable', uploaded: Number(n) };
    const rolled = await scoped()
      .whereIn('artifacts.id', this.db('rollouts').select('artifact_id').where({ state: 'succeeded' }).whereNotNull('artifact_id'))
      .orderBy('artifacts.created_at', 'desc')
      .orderBy('artifacts.id', 'desc')
      .first();
    if (rolled) return { artifact: artifactFrom(rolled), source: 'rollout', uploaded: Number(n) };
    return { artifact: null, source: 'none', uploaded: Number(n) };
  }

  async listArtifacts(limit: number, offset: number): Promise<{ items: ArtifactRow[]; total: number }> {
    const [{ n }] = (await this.db('artifacts').count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db('artifacts').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).offset(offset);
    return { items: rows.map(artifactFrom), total: Number(n) };
  }

  async insertRollout(r: RolloutRow, targets: TargetRow[]): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx('rollouts').insert(rolloutCols(r));
      for (let i = 0; i < targets.length; i += 500) await trx('rollout_targets').insert(targets.slice(i, i + 500).map(targetCols));
    });
  }

  async updateRollout(r: RolloutRow): Promise<void> {
    const { id: _id, ...cols } = rolloutCols(r);
    await this.db('rollouts').where({ id: r.id }).update(cols);
  }

  async updateTarget(t: TargetRow): Promise<void> {
    await this.db('rollout_targets')
      .where({ rollout_id: t.rolloutId, agent_id: t.agentId })
      .update({ state: t.state, reason: t.reason, started_at: t.startedAt, updated_at: t.updatedAt, from_version: t.fromVersion });
  }

  async getRollout(id: string): Promise<RolloutRow | null> {
    const r = await this.db('rollouts').where({ id }).first();
    return r ? rolloutFrom(r) : null;
  }

  async listRollouts(limit: number, offset: number): Promise<{ items: RolloutRow[]; total: number }> {
    const [{ n }] = (await this.db('rollouts').count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db('rollouts').orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).offset(offset);
    return { items: rows.map(rolloutFrom), total: Number(n) };
  }

  async targets(rolloutId: string): Promise<TargetRow[]> {
    return (await this.db('rollout_targets').where({ rollout_id: rolloutId }).orderBy('wave').orderBy('agent_name')).map(targetFrom);
  }

  async getTarget(rolloutId: string, agentId: string): Promise<TargetRow | null> {
    const r = await this.db('rollout_targets').where({ rollout_id: rolloutId, agent_id: agentId }).first();
    return r ? targetFrom(r) : null;
  }

  /** Rollouts the engine must keep driving after a server restart. */
  async activeRollouts(): Promise<RolloutRow[]> {
    return (await this.db('rollouts').whereIn('state', ACTIVE_RUN_STATES)).map(rolloutFrom);
  }
}
