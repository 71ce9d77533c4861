import type { ArtifactView, RolloutState, UpdateState } from '../../protocol/index.js';
import type { Db } from '../db/db.js';
import type { WaveTarget } from '../waves/engine.js';
import { runColumns, runFields, targetColumns, targetFields, WaveRepo, type StoredRun, type WaveTables } from '../waves/repo.js';

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

/** A rollout: the fields of every run in waves (server/waves/repo.ts) and the package it installs. */
export interface RolloutRow extends StoredRun {
  artifactId: string | null;
  version: string;
  url: string | null;
  size: number;
  sha256: string;
  signature: string;
  selector: string;
  allowDowngrade: boolean;
  state: RolloutState;
}

export interface TargetRow extends WaveTarget<UpdateState> {
  rolloutId: string;
  fromVersion: string | null;
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
  ...runFields<RolloutState>(r),
  artifactId: (r['artifact_id'] as string | null) ?? null,
  version: String(r['version']),
  url: (r['url'] as string | null) ?? null,
  size: Number(r['size']),
  sha256: String(r['sha256']),
  signature: String(r['signature']),
  selector: String(r['selector']),
  allowDowngrade: Boolean(r['allow_downgrade']),
});

/** Rollouts and their targets: the queries every run in waves makes (server/waves/repo.ts). */
const ROLLOUTS: WaveTables<RolloutRow, TargetRow> = {
  runs: 'rollouts',
  targets: 'rollout_targets',
  runKey: 'rollout_id',
  runFrom: rolloutFrom,
  runCols: (r) => ({
    ...runColumns(r, 512),
    artifact_id: r.artifactId,
    version: r.version,
    url: r.url,
    size: r.size,
    sha256: r.sha256,
    signature: r.signature,
    selector: r.selector,
    allow_downgrade: r.allowDowngrade,
  }),
  targetFrom: (r) => ({
    ...targetFields<UpdateState>(r),
    rolloutId: String(r['rollout_id']),
    fromVersion: (r['from_version'] as string | null) ?? null,
  }),
  // The reason column is TEXT (64 KiB).
  targetCols: (t) => ({ ...targetColumns(t, 16_000), from_version: t.fromVersion }),
  runOf: (t) => t.rolloutId,
};

/** Database access for artifacts, rollouts and rollout targets. */
export class UpdateRepo {
  /** Rollouts and their targets. */
  readonly rollouts: WaveRepo<RolloutRow, TargetRow>;

  constructor(private readonly db: Db) {
    this.rollouts = new WaveRepo(db, ROLLOUTS);
  }

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
}
