import { createHash, randomUUID } from 'node:crypto';
import type { Actor, AuditLog } from '../auth/audit.js';
import type { Principal } from '../auth/auth-service.js';
import type { ExecService } from '../exec/service.js';
import { ApiError, notFound } from '../http/errors.js';
import type { ScriptParamValue } from '../../protocol/index.js';
import { paramEnv } from './params.js';
import { ScriptConflict, type ScriptContent, type ScriptRepo, type ScriptRow, type ScriptVersion } from './repo.js';

const iso = (t: number) => new Date(t).toISOString();

/** A script as the API shows it: its identity and its latest (or a chosen) version. */
export function scriptView(s: ScriptRow, v: ScriptVersion, withBody = true) {
  return {
    id: s.id,
    name: v.name,
    owner: s.owner,
    description: v.description,
    interpreter: v.interpreter,
    tags: v.tags,
    params: v.params,
    ...(withBody ? { body: v.body } : {}),
    bodyBytes: Buffer.byteLength(v.body),
    bodySha256: v.bodySha256,
    version: v.version,
    latestVersion: s.latestVersion,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
    versionCreatedBy: v.createdBy,
    versionCreatedAt: iso(v.createdAt),
  };
}

/** How a library script run is shaped (the task options of POST /api/tasks besides the script itself). */
export interface RunOptions {
  /** The task's name; default: the script's name. */
  name?: string | null;
  targets: { selector: string } | { agentIds: string[] };
  cwd: string | null;
  timeoutSec: number;
  concurrency?: string | null;
  maxFailures?: string | null;
  offline: 'skip' | 'queue';
  queueTtlSec: number;
}

export interface ScriptServiceDeps {
  repo: ScriptRepo;
  exec: ExecService;
  audit: AuditLog;
  maxScriptBytes: number;
}

/** Script library use cases: create, edit (a new version each time), read, run. */
export class ScriptService {
  constructor(private readonly d: ScriptServiceDeps) {}

  private check(c: ScriptContent): void {
    if (Buffer.byteLength(c.body) > this.d.maxScriptBytes) {
      throw new ApiError('payload_too_large', `script is larger than ${this.d.maxScriptBytes} bytes (MUSTER_MAX_SCRIPT_BYTES)`);
    }
    if (c.interpreter === 'shebang' && !c.body.startsWith('#!')) throw new ApiError('bad_request', 'interpreter "shebang" needs a script starting with #!');
  }

  async create(c: ScriptContent, actor: Actor) {
    this.check(c);
    const now = Date.now();
    const s: ScriptRow = { id: randomUUID(), name: c.name, owner: actor.username, latestVersion: 1, createdAt: now, updatedAt: now };
    const v: ScriptVersion = { ...c, scriptId: s.id, version: 1, bodySha256: sha(c.body), createdBy: actor.username, createdAt: now };
    try {
      await this.d.repo.create(s, v);
    } catch (err) {
      if (err instanceof ScriptConflict) throw new ApiError('conflict', err.message);
      throw err;
    }
    await this.d.audit.record({
      actor,
      action: 'script.create',
      targetType: 'script',
      targetId: s.id,
      details: { name: s.name, version: 1, bodySha256: v.bodySha256, params: c.params.map((p) => p.name) },
    });
    return scriptView(s, v);
  }

  /** Applies `patch` on the latest version as a new version (admins, or the script's owner). */
  async update(idOrName: string, patch: Partial<ScriptContent> & { baseVersion?: number }, who: Principal, actor: Actor) {
    const s = await this.script(idOrName);
    if (who.role !== 'admin' && who.username !== s.owner) {
      await this.d.audit.record({ actor, action: 'script.update', targetType: 'script', targetId: s.id, ok: false, details: { reason: 'not the owner' } });
      throw new ApiError('forbidden', `only an admin or the script's owner (${s.owner}) may edit it`);
    }
    if (patch.baseVersion !== undefined && patch.baseVersion !== s.latestVersion) {
      throw new ApiError('conflict', `the script is at version ${s.latestVersion}, not ${patch.baseVersion}; reload and edit again`);
    }
    const latest = (await this.d.repo.version(s.id, s.latestVersion))!;
    const { baseVersion: _b, ...fields } = patch;
    const next: ScriptContent = {
      name: fields.name ?? latest.name,
      description: fields.description ?? latest.description,
      interpreter: fields.interpreter ?? latest.interpreter,
      body: fields.body ?? latest.body,
      tags: fields.tags ?? latest.tags,
      params: fields.params ?? latest.params,
    };
    this.check(next);
    const changed = (Object.keys(next) as Array<keyof ScriptContent>).filter((k) => JSON.stringify(next[k]) !== JSON.stringify(latest[k]));
    if (changed.length === 0) return scriptView(s, latest); // nothing edited: no new version
    const now = Date.now();
    const v: ScriptVersion = { ...next, scriptId: s.id, version: s.latestVersion + 1, bodySha256: sha(next.body), createdBy: actor.username, createdAt: now };
    try {
      await this.d.repo.addVersion(v);
    } catch (err) {
      if (err instanceof ScriptConflict) throw new ApiError('conflict', err.message);
      throw err;
    }
    await this.d.audit.record({
      actor,
      action: 'script.update',
      targetType: 'script',
      targetId: s.id,
      details: { name: v.name, version: v.version, changed, bodySha256: v.bodySha256 },
    });
    return scriptView({ ...s, name: v.name, latestVersion: v.version, updatedAt: now }, v);
  }

  async remove(idOrName: string, who: Principal, actor: Actor, inUse: (scriptId: string) => Promise<number>): Promise<void> {
    const s = await this.script(idOrName);
    if (who.role !== 'admin' && who.username !== s.owner) throw new ApiError('forbidden', `only an admin or the script's owner (${s.owner}) may delete it`);
    const n = await inUse(s.id);
    if (n > 0) throw new ApiError('conflict', `${n} schedule(s) run this script; delete them first`);
    await this.d.repo.remove(s.id);
    await this.d.audit.record({
      actor,
      action: 'script.delete',
      targetType: 'script',
      targetId: s.id,
      details: { name: s.name, latestVersion: s.latestVersion },
    });
  }

  async script(idOrName: string): Promise<ScriptRow> {
    const s = await this.d.repo.get(idOrName);
    if (!s) throw notFound('script');
    return s;
  }

  /** A script and one of its versions (the latest unless given); 400 if there is no such version. */
  async definitions(idOrName: string, version?: number): Promise<{ script: ScriptRow; version: ScriptVersion }> {
    const s = await this.script(idOrName);
    const v = await this.d.repo.version(s.id, version ?? s.latestVersion);
    if (!v) throw new ApiError('bad_request', `script ${s.name} has no version ${version} (latest is ${s.latestVersion})`);
    return { script: s, version: v };
  }

  async get(idOrName: string) {
    const s = await this.script(idOrName);
    return scriptView(s, (await this.d.repo.version(s.id, s.latestVersion))!);
  }

  async version(idOrName: string, version: number) {
    const s = await this.script(idOrName);
    const v = await this.d.repo.version(s.id, version);
    if (!v) throw notFound(`version ${version} of script ${s.name}`);
    return scriptView(s, v);
  }

  async versions(idOrName: string, limit: number, offset: number) {
    const s = await this.script(idOrName);
    const { items, total } = await this.d.repo.versions(s.id, limit, offset);
    return { items: items.map((v) => scriptView(s, v, false)), total };
  }

  async list(f: { q?: string; tag?: string; limit: number; offset: number }) {
    const { items, total } = await this.d.repo.list(f);
    return { items: items.map(({ s, v }) => scriptView(s, v, false)), total };
  }

  async tasks(idOrName: string, limit: number, offset: number) {
    const s = await this.script(idOrName);
    return this.d.repo.tasks(s.id, limit, offset);
  }

  /**
   * Runs a version (latest unless given) as a task. Parameters reach the script only as
   * MUSTER_PARAM_<NAME> environment variables; secret values are write-only on the task and
   * left out of the audit. `secretParams` (a schedule's stored secrets) stay secret whatever type
   * the version gives their parameter.
   */
  async run(
    input: {
      scriptId: string;
      version?: number | undefined;
      params: Record<string, ScriptParamValue>;
      secretParams?: Record<string, ScriptParamValue>;
    } & RunOptions,
    actor: Actor,
    scheduleId: string | null = null,
  ) {
    const { script: s, version: v } = await this.definitions(input.scriptId, input.version);
    const secrets = input.secretParams ?? {};
    const { env, secretEnv, shown } = paramEnv(v.params, { ...input.params, ...secrets }, new Set(Object.keys(secrets)));
    const task = await this.d.exec.create(
      {
        name: input.name?.trim() || v.name,
        script: v.body,
        interpreter: v.interpreter,
        args: [],
        env,
        cwd: input.cwd,
        timeoutSec: input.timeoutSec,
        targets: input.targets,
        concurrency: input.concurrency ?? null,
        maxFailures: input.maxFailures ?? null,
        offline: input.offline,
        queueTtlSec: input.queueTtlSec,
        scriptId: s.id,
        scriptVersion: v.version,
        scheduleId,
        secretEnv,
        // Library runs are unsigned: hosts whose policy requires signed scripts refuse them (policy_denied).
        signature: null,
      },
      actor,
    );
    await this.d.audit.record({
      actor,
      action: 'script.run',
      targetType: 'script',
      targetId: s.id,
      details: { name: v.name, version: v.version, taskId: task.id, params: shown, secretParams: secretEnv.length, ...(scheduleId ? { scheduleId } : {}) },
    });
    return task;
  }
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
