import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';
import type { ScriptParamDef } from '../../protocol/index.js';

/** The content of one script version (every edit stores a whole new one). */
export interface ScriptContent {
  name: string;
  description: string;
  interpreter: string;
  body: string;
  tags: string[];
  params: ScriptParamDef[];
}

export interface ScriptVersion extends ScriptContent {
  scriptId: string;
  version: number;
  bodySha256: string;
  createdBy: string;
  createdAt: number;
}

export interface ScriptRow {
  id: string;
  name: string;
  owner: string;
  latestVersion: number;
  createdAt: number;
  updatedAt: number;
}

const scriptFrom = (r: Record<string, unknown>): ScriptRow => ({
  id: String(r['id']),
  name: String(r['name']),
  owner: String(r['owner']),
  latestVersion: Number(r['latest_version']),
  createdAt: Number(r['created_at']),
  updatedAt: Number(r['updated_at']),
});

const versionFrom = (r: Record<string, unknown>): ScriptVersion => ({
  scriptId: String(r['script_id']),
  version: Number(r['version']),
  name: String(r['name']),
  description: String(r['description'] ?? ''),
  interpreter: String(r['interpreter']),
  body: String(r['body']),
  bodySha256: String(r['body_sha256']),
  tags: parseJson(r['tags'], []),
  params: parseJson(r['params'], []),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
});

const versionRow = (v: ScriptVersion) => ({
  script_id: v.scriptId,
  version: v.version,
  name: v.name,
  description: v.description,
  interpreter: v.interpreter,
  body: v.body,
  body_sha256: v.bodySha256,
  tags: JSON.stringify(v.tags),
  params: JSON.stringify(v.params),
  created_by: v.createdBy,
  created_at: v.createdAt,
});

/** LIKE pattern text with its wildcards escaped by `!` (a backslash means different things in MySQL and SQLite literals). */
const escapeLike = (s: string) => s.replace(/[!%_]/g, (c) => `!${c}`);

/** Thrown when a script's name is taken or a concurrent edit won. */
export class ScriptConflict extends Error {}

const isUniqueViolation = (err: unknown) => /UNIQUE constraint|Duplicate entry|ER_DUP_ENTRY/i.test(String((err as Error)?.message ?? err));

/** scripts and script_versions. Versions are immutable: rows are only ever inserted. */
export class ScriptRepo {
  constructor(private readonly db: Db) {}

  async create(s: ScriptRow, v: ScriptVersion): Promise<void> {
    try {
      await this.db.transaction(async (trx) => {
        await trx('scripts').insert({
          id: s.id,
          name: s.name,
          owner: s.owner,
          latest_version: s.latestVersion,
          created_at: s.createdAt,
          updated_at: s.updatedAt,
        });
        await trx('script_versions').insert(versionRow(v));
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new ScriptConflict(`a script named ${s.name} exists`);
      throw err;
    }
  }

  /**
   * Adds version `v.version` if the latest is still `v.version - 1` (a conditional update, so two
   * concurrent edits cannot both become the same version).
   */
  async addVersion(v: ScriptVersion): Promise<void> {
    try {
      await this.db.transaction(async (trx) => {
        const n = await trx('scripts')
          .where({ id: v.scriptId, latest_version: v.version - 1 })
          .update({ latest_version: v.version, name: v.name, updated_at: v.createdAt });
        if (n !== 1) throw new ScriptConflict('the script was changed meanwhile; reload and edit again');
        await trx('script_versions').insert(versionRow(v));
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw new ScriptConflict(`a script named ${v.name} exists`);
      throw err;
    }
  }

  /** By id, or by name. */
  async get(idOrName: string): Promise<ScriptRow | null> {
    const r = (await this.db('scripts').where({ id: idOrName }).first()) ?? (await this.db('scripts').where({ name: idOrName }).first());
    return r ? scriptFrom(r) : null;
  }

  async version(scriptId: string, version: number): Promise<ScriptVersion | null> {
    const r = await this.db('script_versions').where({ script_id: scriptId, version }).first();
    return r ? versionFrom(r) : null;
  }

  async versions(scriptId: string, limit: number, offset: number): Promise<{ items: ScriptVersion[]; total: number }> {
    const q = this.db('script_versions').where({ script_id: scriptId });
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q.orderBy('version', 'desc').limit(limit).offset(offset);
    return { items: rows.map(versionFrom), total: Number(n) };
  }

  /** Scripts with their latest version, by name; `q` matches name, description or a tag. */
  async list(f: { q?: string; tag?: string; limit: number; offset: number }): Promise<{ items: Array<{ s: ScriptRow; v: ScriptVersion }>; total: number }> {
    const q = this.db('scripts').join('script_versions', (j) => {
      j.on('script_versions.script_id', '=', 'scripts.id').andOn('script_versions.version', '=', 'scripts.latest_version');
    });
    if (f.q) {
      const like = `%${escapeLike(f.q)}%`;
      q.where((w) => {
        w.whereRaw(`scripts.name like ? escape '!'`, [like])
          .orWhereRaw(`script_versions.description like ? escape '!'`, [like])
          .orWhereRaw(`script_versions.tags like ? escape '!'`, [like]);
      });
    }
    if (f.tag) q.whereRaw(`script_versions.tags like ? escape '!'`, [`%${escapeLike(JSON.stringify(f.tag))}%`]);
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q
      .orderBy('scripts.name')
      .limit(f.limit)
      .offset(f.offset)
      .select(
        'scripts.*',
        'script_versions.script_id',
        'script_versions.version',
        'script_versions.description',
        'script_versions.interpreter',
        'script_versions.body',
        'script_versions.body_sha256',
        'script_versions.tags',
        'script_versions.params',
        'script_versions.created_by',
      );
    return {
      items: rows.map((r: Record<string, unknown>) => ({ s: scriptFrom(r), v: versionFrom({ ...r, created_at: r['updated_at'] }) })),
      total: Number(n),
    };
  }

  /** Deletes a script and its versions (tasks that ran it keep their copy of the body). */
  async remove(id: string): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx('script_versions').where({ script_id: id }).delete();
      await trx('scripts').where({ id }).delete();
    });
  }

  /** Tasks that ran this script (newest first), with their status. */
  async tasks(scriptId: string, limit: number, offset: number): Promise<{ items: Array<Record<string, unknown>>; total: number }> {
    const q = this.db('tasks').where({ script_id: scriptId });
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q
      .orderBy('created_at', 'desc')
      .limit(limit)
      .offset(offset)
      .select('id', 'script_version', 'schedule_id', 'status', 'total', 'created_by', 'created_at', 'finished_at');
    return {
      items: rows.map((r: Record<string, unknown>) => ({
        id: r['id'],
        scriptVersion: Number(r['script_version']),
        scheduleId: r['schedule_id'] ?? null,
        status: r['status'],
        total: Number(r['total']),
        createdBy: r['created_by'],
        createdAt: new Date(Number(r['created_at'])).toISOString(),
        finishedAt: r['finished_at'] == null ? null : new Date(Number(r['finished_at'])).toISOString(),
      })),
      total: Number(n),
    };
  }
}
