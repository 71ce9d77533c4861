import { randomUUID } from 'node:crypto';
import type { ScheduleCalendar, ScheduleHistory, ScheduleView } from '../../protocol/index.js';
import type { Actor, AuditLog } from '../auth/audit.js';
import type { Principal } from '../auth/auth-service.js';
import { ApiError, notFound } from '../http/errors.js';
import type { ScriptParamValue } from '../../protocol/index.js';
import { paramEnv } from '../scripts/params.js';
import type { ScriptService } from '../scripts/service.js';
import { NameTaken, type Schedule, type ScheduleRepo } from './repo.js';
import { nextAfter, nextFires, timingProblem, type Timing } from './timing.js';

const iso = (t: number | null) => (t == null ? null : new Date(t).toISOString());

export const timingOf = (s: Schedule): Timing =>
  s.cron !== null
    ? { cron: s.cron, timeZone: s.timeZone, intervalSec: null, anchorAt: s.anchorAt }
    : { cron: null, timeZone: s.timeZone, intervalSec: s.intervalSec ?? 60, anchorAt: s.anchorAt };

/** A schedule as the API shows it: secret parameter values are never in it, only their names. */
export function scheduleView(s: Schedule): ScheduleView {
  const upcoming = s.enabled && s.nextFireAt != null ? [s.nextFireAt, ...nextFires(timingOf(s), s.nextFireAt, 4)] : [];
  return {
    id: s.id,
    name: s.name,
    scriptId: s.scriptId,
    version: s.scriptVersion,
    params: s.params,
    secretParams: Object.keys(s.secretParams),
    targets: { selector: s.selector },
    timeoutSec: s.timeoutSec,
    concurrency: s.concurrency,
    maxFailures: s.maxFailures,
    offline: s.offline,
    queueTtlSec: s.queueTtlSec,
    cron: s.cron,
    timeZone: s.timeZone,
    intervalSec: s.intervalSec,
    enabled: s.enabled,
    overlap: s.overlap,
    missed: s.missed,
    nextFireAt: iso(s.nextFireAt),
    nextFires: upcoming.map((t) => new Date(t).toISOString()),
    lastDueAt: iso(s.lastDueAt),
    createdBy: s.createdBy,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
  };
}

/** What POST /api/schedules takes (PATCH takes any part of it). */
export interface ScheduleInput {
  name: string;
  scriptId: string;
  version: number | null;
  params: Record<string, ScriptParamValue>;
  selector: string;
  timeoutSec: number;
  concurrency: string | null;
  maxFailures: string | null;
  offline: 'skip' | 'queue';
  queueTtlSec: number;
  cron: string | null;
  timeZone: string;
  intervalSec: number | null;
  enabled: boolean;
  overlap: 'skip' | 'allow';
  missed: 'skip' | 'run_once';
}

export interface ScheduleServiceDeps {
  repo: ScheduleRepo;
  scripts: ScriptService;
  audit: AuditLog;
  minIntervalSec: number;
  /** Most fires one calendar answer lists (MUSTER_SCHEDULE_CALENDAR_MAX_FIRES). */
  calendarMaxFires: number;
  /** Checks a selector's syntax (throws ApiError 400). */
  checkSelector(selector: string): void;
}

/** Schedule use cases: create, change, delete, read. Firing is the engine's. */
export class ScheduleService {
  constructor(private readonly d: ScheduleServiceDeps) {}

  async create(input: ScheduleInput, actor: Actor) {
    const now = Date.now();
    const s: Schedule = {
      id: randomUUID(),
      name: input.name,
      scriptId: '',
      scriptVersion: input.version,
      params: {},
      secretParams: {},
      selector: input.selector,
      timeoutSec: input.timeoutSec,
      concurrency: input.concurrency,
      maxFailures: input.maxFailures,
      offline: input.offline,
      queueTtlSec: input.queueTtlSec,
      cron: input.cron,
      timeZone: input.timeZone,
      intervalSec: input.intervalSec,
      anchorAt: now,
      enabled: input.enabled,
      overlap: input.overlap,
      missed: input.missed,
      nextFireAt: null,
      lastDueAt: null,
      createdBy: actor.username,
      createdAt: now,
      updatedAt: now,
    };
    await this.settle(s, input.scriptId, input.params, {});
    s.nextFireAt = s.enabled ? nextAfter(timingOf(s), now) : null;
    try {
      await this.d.repo.insert(s);
    } catch (err) {
      if (err instanceof NameTaken) throw new ApiError('conflict', err.message);
      throw err;
    }
    await this.d.audit.record({ actor, action: 'schedule.create', targetType: 'schedule', targetId: s.id, details: this.auditDetails(s) });
    return scheduleView(s);
  }

  async update(idOrName: string, patch: Partial<ScheduleInput>, who: Principal, actor: Actor) {
    const s = await this.get(idOrName);
    this.mayChange(s, who);
    const now = Date.now();
    const timingChanged =
      (patch.cron !== undefined && patch.cron !== s.cron) ||
      (patch.intervalSec !== undefined && patch.intervalSec !== s.intervalSec) ||
      (patch.timeZone !== undefined && patch.timeZone !== s.timeZone);
    const wasEnabled = s.enabled;
    const next: Schedule = {
      ...s,
      name: patch.name ?? s.name,
      scriptVersion: patch.version !== undefined ? patch.version : s.scriptVersion,
      selector: patch.selector ?? s.selector,
      timeoutSec: patch.timeoutSec ?? s.timeoutSec,
      concurrency: patch.concurrency !== undefined ? patch.concurrency : s.concurrency,
      maxFailures: patch.maxFailures !== undefined ? patch.maxFailures : s.maxFailures,
      offline: patch.offline ?? s.offline,
      queueTtlSec: patch.queueTtlSec ?? s.queueTtlSec,
      timeZone: patch.timeZone ?? s.timeZone,
      enabled: patch.enabled ?? s.enabled,
      overlap: patch.overlap ?? s.overlap,
      missed: patch.missed ?? s.missed,
      updatedAt: now,
    };
    // cron and intervalSec exclude each other: setting one clears the other.
    if (patch.cron != null) {
      next.cron = patch.cron;
      next.intervalSec = null;
    } else if (patch.intervalSec != null) {
      next.intervalSec = patch.intervalSec;
      next.cron = null;
    }
    const changingScript = patch.scriptId !== undefined || patch.version !== undefined || patch.params !== undefined;
    if (changingScript) await this.settle(next, patch.scriptId ?? s.scriptId, patch.params ?? { ...s.params }, s.secretParams);
    else this.checkTiming(next);
    if (patch.selector !== undefined) this.d.checkSelector(next.selector);
    if (timingChanged) next.anchorAt = now;
    if (!next.enabled) next.nextFireAt = null;
    else if (timingChanged || !wasEnabled || next.nextFireAt == null) next.nextFireAt = nextAfter(timingOf(next), now);
    try {
      await this.d.repo.update(next);
    } catch (err) {
      if (err instanceof NameTaken) throw new ApiError('conflict', err.message);
      throw err;
    }
    const changed = Object.keys(patch);
    await this.d.audit.record({ actor, action: 'schedule.update', targetType: 'schedule', targetId: s.id, details: { ...this.auditDetails(next), changed } });
    return scheduleView(next);
  }

  async remove(idOrName: string, who: Principal, actor: Actor): Promise<void> {
    const s = await this.get(idOrName);
    this.mayChange(s, who);
    await this.d.repo.remove(s.id);
    await this.d.audit.record({ actor, action: 'schedule.delete', targetType: 'schedule', targetId: s.id, details: { name: s.name } });
  }

  async get(idOrName: string): Promise<Schedule> {
    const s = await this.d.repo.get(idOrName);
    if (!s) throw notFound('schedule');
    return s;
  }

  async list(limit: number, offset: number) {
    const { items, total } = await this.d.repo.list(limit, offset);
    return { items: items.map(scheduleView), total };
  }

  /**
   * The calendar of next runs: every due time of every enabled schedule in [from, to), soonest
   * first, at most `calendarMaxFires` (then `truncated`). The schedules' sequences are merged
   * through a heap, so an every-10-seconds schedule costs the fires listed, not a week of them.
   */
  async calendar(from: number, to: number): Promise<ScheduleCalendar> {
    const max = this.d.calendarMaxFires;
    const schedules = await this.d.repo.upcoming(to, max + 1);
    const heap = new FireHeap();
    for (const s of schedules) {
      const t = timingOf(s);
      // The stored next fire is the first; from a later start, the first due time at or after it.
      const at = s.nextFireAt !== null && s.nextFireAt >= from ? s.nextFireAt : nextAfter(t, from - 1);
      if (at !== null && at < to) heap.push({ at, s, t });
    }
    const items: ScheduleCalendar['items'] = [];
    let truncated = schedules.length > max;
    for (let e = heap.pop(); e; e = heap.pop()) {
      if (items.length === max) {
        truncated = true;
        break;
      }
      const { s } = e;
      items.push({ at: iso(e.at)!, scheduleId: s.id, name: s.name, scriptId: s.scriptId, version: s.scriptVersion, selector: s.selector });
      const next = nextAfter(e.t, e.at);
      if (next !== null && next < to) heap.push({ at: next, s, t: e.t });
    }
    return { from: iso(from)!, to: iso(to)!, items, truncated };
  }

  /** A schedule's fires with their tasks, and its success rate over the finished tasks. */
  async history(idOrName: string, limit: number, offset: number): Promise<ScheduleHistory> {
    const s = await this.get(idOrName);
    const [{ items, total }, stats] = await Promise.all([this.d.repo.fires(s.id, limit, offset), this.d.repo.stats(s.id)]);
    const finished = (stats.tasks['succeeded'] ?? 0) + (stats.tasks['failed'] ?? 0) + (stats.tasks['cancelled'] ?? 0);
    return {
      items: items.map((f) => ({
        dueAt: new Date(f.dueAt).toISOString(),
        firedAt: new Date(f.firedAt).toISOString(),
        status: f.status,
        taskId: f.taskId,
        taskStatus: f.taskStatus,
        scriptVersion: f.scriptVersion,
        reason: f.reason,
        nodeId: f.nodeId,
      })),
      total,
      stats: { fires: stats.fires, tasks: stats.tasks, successRate: finished ? (stats.tasks['succeeded'] ?? 0) / finished : null },
    };
  }

  private mayChange(s: Schedule, who: Principal): void {
    if (who.role !== 'admin' && who.username !== s.createdBy)
      throw new ApiError('forbidden', `only an admin or the schedule's creator (${s.createdBy}) may change it`);
  }

  private checkTiming(s: Schedule): void {
    if ((s.cron === null) === (s.intervalSec === null)) throw new ApiError('bad_request', 'give either cron or intervalSec');
    const problem = timingProblem(s.cron, s.timeZone);
    if (problem) throw new ApiError('bad_request', problem);
    if (s.intervalSec !== null && s.intervalSec < this.d.minIntervalSec) {
      throw new ApiError('bad_request', `intervalSec must be at least ${this.d.minIntervalSec} (MUSTER_SCHEDULE_MIN_INTERVAL_SEC)`);
    }
  }

  /**
   * Resolves the script, checks the parameters against the version the schedule will run (the
   * latest, when it follows the latest) and keeps secret values apart, write-only.
   */
  private async settle(s: Schedule, scriptId: string, params: Record<string, ScriptParamValue>, oldSecrets: Record<string, string>): Promise<void> {
    this.checkTiming(s);
    this.d.checkSelector(s.selector);
    const { script, version } = await this.d.scripts.definitions(scriptId, s.scriptVersion ?? undefined);
    s.scriptId = script.id;
    const secretNames = new Set(version.params.filter((p) => p.type === 'secret').map((p) => p.name));
    const pub: Record<string, ScriptParamValue> = {};
    const secret: Record<string, string> = {};
    for (const [k, v] of Object.entries(oldSecrets)) if (secretNames.has(k)) secret[k] = v;
    for (const [k, v] of Object.entries(params)) {
      if (secretNames.has(k)) secret[k] = String(v);
      else pub[k] = v;
    }
    paramEnv(version.params, { ...pub, ...secret }); // throws 400 naming the parameter
    s.params = pub;
    s.secretParams = secret;
  }

  private auditDetails(s: Schedule) {
    return {
      name: s.name,
      scriptId: s.scriptId,
      version: s.scriptVersion,
      selector: s.selector,
      cron: s.cron,
      timeZone: s.timeZone,
      intervalSec: s.intervalSec,
      enabled: s.enabled,
      params: s.params,
      secretParams: Object.keys(s.secretParams),
    };
  }
}

interface HeapEntry {
  at: number;
  s: Schedule;
  t: Timing;
}

/** A binary min-heap of next due times (ties: by schedule name, so the order is stable). */
class FireHeap {
  private readonly a: HeapEntry[] = [];
  private less(x: HeapEntry, y: HeapEntry): boolean {
    return x.at < y.at || (x.at === y.at && x.s.name < y.s.name);
  }
  push(e: HeapEntry): void {
    const a = this.a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): HeapEntry | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (!a.length || !last) return top;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && this.less(a[l]!, a[m]!)) m = l;
      if (r < a.length && this.less(a[r]!, a[m]!)) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m]!, a[i]!];
      i = m;
    }
    return top;
  }
}
