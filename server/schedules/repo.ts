import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';
import type { ScriptParamValue } from '../../protocol/index.js';
import type { FireStatus } from '../../protocol/index.js';

export interface Schedule {
  id: string;
  name: string;
  scriptId: string;
  scriptVersion: number | null;
  params: Record<string, ScriptParamValue>;
  /** Write-only values of secret parameters (never in a view). */
  secretParams: Record<string, string>;
  selector: string;
  timeoutSec: number;
  concurrency: string | null;
  maxFailures: string | null;
  offline: 'skip' | 'queue';
  queueTtlSec: number;
  cron: string | null;
  timeZone: string;
  intervalSec: number | null;
  anchorAt: number;
  enabled: boolean;
  overlap: 'skip' | 'allow';
  missed: 'skip' | 'run_once';
  nextFireAt: number | null;
  lastDueAt: number | null;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
}

export type { FireStatus };
export interface Fire {
  scheduleId: string;
  dueAt: number;
  firedAt: number;
  nodeId: string;
  status: FireStatus;
  taskId: string | null;
  scriptVersion: number | null;
  reason: string | null;
}

const num = (v: unknown) => (v == null ? null : Number(v));

const fromRow = (r: Record<string, unknown>): Schedule => ({
  id: String(r['id']),
  name: String(r['name']),
  scriptId: String(r['script_id']),
  scriptVersion: num(r['script_version']),
  params: parseJson(r['params'], {}),
  secretParams: parseJson(r['secret_params'], {}),
  selector: String(r['selector']),
  timeoutSec: Number(r['timeout_sec']),
  concurrency: (r['concurrency'] as string | null) ?? null,
  maxFailures: (r['max_failures'] as string | null) ?? null,
  offline: r['offline'] === 'queue' ? 'queue' : 'skip',
  queueTtlSec: Number(r['queue_ttl_sec']),
  cron: (r['cron'] as string | null) ?? null,
  timeZone: String(r['time_zone']),
  intervalSec: num(r['interval_sec']),
  anchorAt: Number(r['anchor_at']),
  enabled: Boolean(r['enabled']),
  overlap: r['overlap'] === 'allow' ? 'allow' : 'skip',
  missed: r['missed'] === 'run_once' ? 'run_once' : 'skip',
  nextFireAt: num(r['next_fire_at']),
  lastDueAt: num(r['last_due_at']),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
  updatedAt: Number(r['updated_at']),
});

const toRow = (s: Schedule) => ({
  id: s.id,
  name: s.name,
  script_id: s.scriptId,
  script_version: s.scriptVersion,
  params: JSON.stringify(s.params),
  secret_params: Object.keys(s.secretParams).length ? JSON.stringify(s.secretParams) : null,
  selector: s.selector,
  timeout_sec: s.timeoutSec,
  concurrency: s.concurrency,
  max_failures: s.maxFailures,
  offline: s.offline,
  queue_ttl_sec: s.queueTtlSec,
  cron: s.cron,
  time_zone: s.timeZone,
  interval_sec: s.intervalSec,
  anchor_at: s.anchorAt,
  enabled: s.enabled,
  overlap: s.overlap,
  missed: s.missed,
  next_fire_at: s.nextFireAt,
  last_due_at: s.lastDueAt,
  created_by: s.createdBy,
  created_at: s.createdAt,
  updated_at: s.updatedAt,
});

const fireFrom = (r: Record<string, unknown>): Fire => ({
  scheduleId: String(r['schedule_id']),
  dueAt: Number(r['due_at']),
  firedAt: Number(r['fired_at']),
  nodeId: String(r['node_id']),
  status: String(r['status']) as FireStatus,
  taskId: (r['task_id'] as string | null) ?? null,
  scriptVersion: num(r['script_version']),
  reason: (r['reason'] as string | null) ?? null,
});

const isUniqueViolation = (err: unknown) => /UNIQUE constraint|Duplicate entry|ER_DUP_ENTRY/i.test(String((err as Error)?.message ?? err));

/** Thrown when a schedule's name is taken. */
export class NameTaken extends Error {}

/** schedules and schedule_fires. */
export class ScheduleRepo {
  constructor(private readonly db: Db) {}

  async insert(s: Schedule): Promise<void> {
    try {
      await this.db('schedules').insert(toRow(s));
    } catch (err) {
      if (isUniqueViolation(err)) throw new NameTaken(`a schedule named ${s.name} exists`);
      throw err;
    }
  }

  async update(s: Schedule): Promise<void> {
    try {
      await this.db('schedules').where({ id: s.id }).update(toRow(s));
    } catch (err) {
      if (isUniqueViolation(err)) throw new NameTaken(`a schedule named ${s.name} exists`);
      throw err;
    }
  }

  async remove(id: string): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx('schedule_fires').where({ schedule_id: id }).delete();
      await trx('schedules').where({ id }).delete();
    });
  }

  async get(idOrName: string): Promise<Schedule | null> {
    const r = (await this.db('schedules').where({ id: idOrName }).first()) ?? (await this.db('schedules').where({ name: idOrName }).first());
    return r ? fromRow(r) : null;
  }

  async list(limit: number, offset: number): Promise<{ items: Schedule[]; total: number }> {
    const [{ n }] = (await this.db('schedules').count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db('schedules').orderBy('name').limit(limit).offset(offset);
    return { items: rows.map(fromRow), total: Number(n) };
  }

  async countForScript(scriptId: string): Promise<number> {
    const [{ n }] = (await this.db('schedules').where({ script_id: scriptId }).count({ n: '*' })) as [{ n: number | string }];
    return Number(n);
  }

  /** Enabled schedules whose next fire is before `before`, soonest first (the calendar's). */
  async upcoming(before: number, limit: number): Promise<Schedule[]> {
    const rows = await this.db('schedules')
      .where('enabled', true)
      .whereNotNull('next_fire_at')
      .where('next_fire_at', '<', before)
      .orderBy('next_fire_at')
      .limit(limit);
    return rows.map(fromRow);
  }

  /** Enabled schedules whose next fire is due. */
  async due(now: number, limit: number): Promise<Schedule[]> {
    const rows = await this.db('schedules').where('enabled', true).where('next_fire_at', '<=', now).orderBy('next_fire_at').limit(limit);
    return rows.map(fromRow);
  }

  /**
   * Claims the fire due at `dueAt`: moves next_fire_at on only if it still is `dueAt` (another
   * process that claimed it first moved it already) and records the fire row, whose primary key
   * (schedule, due time) makes a second claim of the same due time impossible. True if ours.
   */
  async claim(id: string, dueAt: number, next: number | null, fire: Fire): Promise<boolean> {
    try {
      return await this.db.transaction(async (trx) => {
        const n = await trx('schedules').where({ id, next_fire_at: dueAt, enabled: true }).update({ next_fire_at: next, last_due_at: dueAt });
        if (n !== 1) return false;
        await trx('schedule_fires').insert({
          schedule_id: fire.scheduleId,
          due_at: fire.dueAt,
          fired_at: fire.firedAt,
          node_id: fire.nodeId,
          status: fire.status,
          task_id: fire.taskId,
          script_version: fire.scriptVersion,
          reason: fire.reason,
        });
        return true;
      });
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  async finishFire(
    scheduleId: string,
    dueAt: number,
    patch: { status: FireStatus; taskId?: string | null; scriptVersion?: number | null; reason?: string | null },
  ): Promise<void> {
    await this.db('schedule_fires')
      .where({ schedule_id: scheduleId, due_at: dueAt })
      .update({
        status: patch.status,
        task_id: patch.taskId ?? null,
        script_version: patch.scriptVersion ?? null,
        reason: patch.reason?.slice(0, 1024) ?? null,
      });
  }

  /**
   * Settles fires this node claimed but never finished (it stopped in between). If the task was
   * created before the stop, the fire is `started` with it: the schedule's first task created at or
   * after the claim that no other fire names (a schedule creates at most one task per fire, in
   * order). Otherwise `failed`: a fire runs at most once, so it is not run again.
   */
  async settleClaims(nodeId: string): Promise<{ started: number; failed: number }> {
    const open = (await this.db('schedule_fires').where({ node_id: nodeId, status: 'claimed' }).orderBy('fired_at')).map(fireFrom);
    let started = 0;
    for (const f of open) {
      const t = await this.db('tasks')
        .where({ schedule_id: f.scheduleId })
        .where('created_at', '>=', f.firedAt)
        .whereNotIn('id', this.db('schedule_fires').where({ schedule_id: f.scheduleId }).whereNotNull('task_id').select('task_id'))
        .orderBy('created_at')
        .first('id', 'script_version');
      if (t) {
        await this.finishFire(f.scheduleId, f.dueAt, {
          status: 'started',
          taskId: String(t.id),
          scriptVersion: num(t.script_version),
          reason: 'recorded after a restart',
        });
        started++;
      } else {
        await this.finishFire(f.scheduleId, f.dueAt, {
          status: 'failed',
          reason: 'the server stopped before the task was created (not retried: a fire runs at most once)',
        });
      }
    }
    return { started, failed: open.length - started };
  }

  /** Whether a task this schedule started is still running. */
  async running(scheduleId: string): Promise<boolean> {
    const r = await this.db('tasks').where({ schedule_id: scheduleId, status: 'running' }).first('id');
    return Boolean(r);
  }

  /** A schedule's fires (newest first) with their task's status and counts. */
  async fires(scheduleId: string, limit: number, offset: number): Promise<{ items: Array<Fire & { taskStatus: string | null }>; total: number }> {
    const [{ n }] = (await this.db('schedule_fires').where({ schedule_id: scheduleId }).count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db('schedule_fires')
      .leftJoin('tasks', 'tasks.id', 'schedule_fires.task_id')
      .where('schedule_fires.schedule_id', scheduleId)
      .orderBy('schedule_fires.due_at', 'desc')
      .limit(limit)
      .offset(offset)
      .select('schedule_fires.*', 'tasks.status as task_status');
    return { items: rows.map((r: Record<string, unknown>) => ({ ...fireFrom(r), taskStatus: (r['task_status'] as string | null) ?? null })), total: Number(n) };
  }

  /** Fire outcomes of a schedule: fires by status and started tasks by their status. */
  async stats(scheduleId: string): Promise<{ fires: Record<string, number>; tasks: Record<string, number> }> {
    const fires: Record<string, number> = {};
    for (const r of (await this.db('schedule_fires').where({ schedule_id: scheduleId }).groupBy('status').select('status').count({ n: '*' })) as Array<{
      status: string;
      n: number | string;
    }>) {
      fires[r.status] = Number(r.n);
    }
    const tasks: Record<string, number> = {};
    for (const r of (await this.db('tasks').where({ schedule_id: scheduleId }).groupBy('status').select('status').count({ n: '*' })) as Array<{
      status: string;
      n: number | string;
    }>) {
      tasks[r.status] = Number(r.n);
    }
    return { fires, tasks };
  }
}
