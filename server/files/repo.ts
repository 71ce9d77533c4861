import type { DistributionState, DistributionTargetState, FileRevisionView, ManagedFileView } from '../../protocol/index.js';
import type { Db } from '../db/db.js';
import type { WaveTarget } from '../waves/engine.js';
import { runColumns, runFields, targetColumns, targetFields, WaveRepo, type StoredRun, type WaveTables } from '../waves/repo.js';

export interface FileRow {
  id: string;
  path: string;
  owner: string | null;
  group: string | null;
  mode: number;
  postCommand: string | null;
  latestRevision: number;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  deletedAt: number | null;
}
export interface RevisionRow {
  fileId: string;
  revision: number;
  sha256: string;
  size: number;
  createdBy: string;
  createdAt: number;
}
/** A distribution: the fields of every run in waves (server/waves/repo.ts) and what it sends. */
export interface DistributionRow extends StoredRun {
  fileId: string;
  revision: number;
  kind: 'apply' | 'remove';
  selector: string;
  state: DistributionState;
}
export interface TargetRow extends WaveTarget<DistributionTargetState> {
  distributionId: string;
  postTaskId: string | null;
}
export interface HostRow {
  fileId: string;
  agentId: string;
  revision: number;
  sha256: string | null;
  state: 'ok' | 'drifted' | 'missing';
  reason: string | null;
  updatedAt: number;
}

const iso = (t: number) => new Date(t).toISOString();
const num = (v: unknown) => (v == null ? null : Number(v));
const str = (v: unknown) => (v == null ? null : String(v));

const fileFrom = (r: Record<string, unknown>): FileRow => ({
  id: String(r['id']),
  path: String(r['path']),
  owner: str(r['owner_user']),
  group: str(r['owner_group']),
  mode: Number(r['mode']),
  postCommand: str(r['post_command']),
  latestRevision: Number(r['latest_revision']),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
  updatedAt: Number(r['updated_at']),
  deletedAt: num(r['deleted_at']),
});
const revisionFrom = (r: Record<string, unknown>): RevisionRow => ({
  fileId: String(r['file_id']),
  revision: Number(r['revision']),
  sha256: String(r['sha256']),
  size: Number(r['size']),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
});
const distributionFrom = (r: Record<string, unknown>): DistributionRow => ({
  ...runFields<DistributionState>(r),
  fileId: String(r['file_id']),
  revision: Number(r['revision']),
  kind: String(r['kind']) as 'apply' | 'remove',
  selector: String(r['selector']),
});
const targetFrom = (r: Record<string, unknown>): TargetRow => ({
  ...targetFields<DistributionTargetState>(r),
  distributionId: String(r['distribution_id']),
  postTaskId: str(r['post_task_id']),
});
const hostFrom = (r: Record<string, unknown>): HostRow => ({
  fileId: String(r['file_id']),
  agentId: String(r['agent_id']),
  revision: Number(r['revision']),
  sha256: str(r['sha256']),
  state: String(r['state']) as HostRow['state'],
  reason: str(r['reason']),
  updatedAt: Number(r['updated_at']),
});

/** Distributions and their targets: the queries every run in waves makes (server/waves/repo.ts). */
const DISTRIBUTIONS: WaveTables<DistributionRow, TargetRow> = {
  runs: 'file_distributions',
  targets: 'file_distribution_targets',
  runKey: 'distribution_id',
  runFrom: distributionFrom,
  runCols: (d) => ({ ...runColumns(d, 1024), file_id: d.fileId, revision: d.revision, kind: d.kind, selector: d.selector }),
  targetFrom,
  targetCols: (t) => ({ ...targetColumns(t, 2048), post_task_id: t.postTaskId }),
  runOf: (t) => t.distributionId,
};

export function fileView(f: FileRow, hosts = 0, drifted = 0): ManagedFileView {
  return {
    id: f.id,
    path: f.path,
    owner: f.owner,
    group: f.group,
    mode: f.mode,
    postCommand: f.postCommand,
    latestRevision: f.latestRevision,
    createdBy: f.createdBy,
    createdAt: iso(f.createdAt),
    updatedAt: iso(f.updatedAt),
    hostCount: hosts,
    driftedCount: drifted,
  };
}
export function revisionView(r: RevisionRow): FileRevisionView {
  return { fileId: r.fileId, revision: r.revision, sha256: r.sha256, size: r.size, createdBy: r.createdBy, createdAt: iso(r.createdAt) };
}

/** Database access for managed files, revisions, distributions and per-host state. */
export class FileRepo {
  /** Distributions and their targets. */
  readonly distributions: WaveRepo<DistributionRow, TargetRow>;

  constructor(private readonly db: Db) {
    this.distributions = new WaveRepo(db, DISTRIBUTIONS);
  }

  async insertFile(f: FileRow, pathKey: string): Promise<void> {
    await this.db('managed_files').insert({
      id: f.id,
      path: f.path,
      path_key: pathKey,
      owner_user: f.owner,
      owner_group: f.group,
      mode: f.mode,
      post_command: f.postCommand,
      latest_revision: f.latestRevision,
      created_by: f.createdBy,
      created_at: f.createdAt,
      updated_at: f.updatedAt,
      deleted_at: null,
    });
  }

  async pathTaken(pathKey: string): Promise<boolean> {
    return Boolean(await this.db('managed_files').where({ path_key: pathKey }).first('id'));
  }

  /** A managed file (`withDeleted`: also one that was deleted, for its history). */
  async getFile(id: string, withDeleted = false): Promise<FileRow | null> {
    const q = this.db('managed_files').where({ id });
    if (!withDeleted) q.whereNull('deleted_at');
    const r = await q.first();
    return r ? fileFrom(r) : null;
  }

  /** Any file, deleted ones included (agents may still report them). */
  async fileStates(ids: string[]): Promise<Map<string, boolean>> {
    const out = new Map<string, boolean>();
    for (let i = 0; i < ids.length; i += 500) {
      for (const r of await this.db('managed_files')
        .whereIn('id', ids.slice(i, i + 500))
        .select('id', 'deleted_at')) {
        out.set(String(r.id), r.deleted_at == null);
      }
    }
    return out;
  }

  async listFiles(limit: number, offset: number, q?: string): Promise<{ items: { file: FileRow; hosts: number; drifted: number }[]; total: number }> {
    const base = () => {
      const b = this.db('managed_files').whereNull('deleted_at');
      if (q) b.where('path', 'like', `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`);
      return b;
    };
    const [{ n }] = (await base().count({ n: '*' })) as [{ n: number | string }];
    const rows = (await base().orderBy('path').limit(limit).offset(offset)).map(fileFrom);
    const counts = new Map<string, { hosts: number; drifted: number }>();
    if (rows.length) {
      const agg = await this.db('file_hosts')
        .whereIn(
          'file_id',
          rows.map((r) => r.id),
        )
        .groupBy('file_id', 'state')
        .select('file_id', 'state')
        .count({ n: '*' });
      for (const a of agg as { file_id: string; state: string; n: number | string }[]) {
        const c = counts.get(a.file_id) ?? { hosts: 0, drifted: 0 };
        c.hosts += Number(a.n);
        if (a.state !== 'ok') c.drifted += Number(a.n);
        counts.set(a.file_id, c);
      }
    }
    return { items: rows.map((file) => ({ file, ...(counts.get(file.id) ?? { hosts: 0, drifted: 0 }) })), total: Number(n) };
  }

  async updateFile(f: FileRow): Promise<void> {
    await this.db('managed_files').where({ id: f.id }).update({
      owner_user: f.owner,
      owner_group: f.group,
      mode: f.mode,
      post_command: f.postCommand,
      updated_at: f.updatedAt,
    });
  }

  async markDeleted(id: string, at: number): Promise<void> {
    await this.db('managed_files').where({ id }).update({ deleted_at: at, path_key: null, updated_at: at });
  }

  /**
   * Adds the next revision number. The conditional update makes two uploads at once get 1 and 2
   * (the loser of a race tries again with the next number), never both the same one.
   */
  async addRevision(fileId: string, r: Omit<RevisionRow, 'fileId' | 'revision'>): Promise<RevisionRow | null> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const row = await this.db.transaction(async (trx) => {
        const f = await trx('managed_files').where({ id: fileId }).whereNull('deleted_at').first('latest_revision');
        if (!f) return 'gone' as const;
        const revision = Number(f.latest_revision) + 1;
        const n = await trx('managed_files')
          .where({ id: fileId, latest_revision: revision - 1 })
          .update({ latest_revision: revision, updated_at: r.createdAt });
        if (n !== 1) return null;
        await trx('file_revisions').insert({ file_id: fileId, revision, sha256: r.sha256, size: r.size, created_by: r.createdBy, created_at: r.createdAt });
        return { fileId, revision, ...r };
      });
      if (row === 'gone') return null;
      if (row) return row;
    }
    throw new Error('could not allocate a revision number (too many concurrent uploads)');
  }

  async getRevision(fileId: string, revision: number): Promise<RevisionRow | null> {
    const r = await this.db('file_revisions').where({ file_id: fileId, revision }).first();
    return r ? revisionFrom(r) : null;
  }

  async revisions(fileId: string): Promise<RevisionRow[]> {
    return (await this.db('file_revisions').where({ file_id: fileId }).orderBy('revision', 'desc')).map(revisionFrom);
  }

  async hosts(fileId: string): Promise<HostRow[]> {
    return (await this.db('file_hosts').where({ file_id: fileId }).orderBy('agent_id')).map(hostFrom);
  }

  async upsertHost(h: HostRow): Promise<void> {
    const cols = { revision: h.revision, sha256: h.sha256, state: h.state, reason: h.reason?.slice(0, 1024) ?? null, updated_at: h.updatedAt };
    await this.db('file_hosts')
      .insert({ file_id: h.fileId, agent_id: h.agentId, ...cols })
      .onConflict(['file_id', 'agent_id'])
      .merge(cols);
  }

  async hostsOfAgent(agentId: string): Promise<HostRow[]> {
    return (await this.db('file_hosts').where({ agent_id: agentId })).map(hostFrom);
  }

  async removeHost(fileId: string, agentId: string): Promise<void> {
    await this.db('file_hosts').where({ file_id: fileId, agent_id: agentId }).delete();
  }
}
