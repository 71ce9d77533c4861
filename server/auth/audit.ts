import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';

export interface Actor {
  username: string;
  role: string | null;
  ip: string | null;
}
export interface AuditEvent {
  actor: Actor;
  action: string;
  targetType?: string;
  targetId?: string;
  ok?: boolean;
  details?: Record<string, unknown>;
  /** When it happened (default: now); a record written late, after an outage, keeps its time. */
  at?: number;
}
export interface AuditRow {
  id: number;
  at: string;
  actor: string;
  role: string | null;
  action: string;
  targetType: string | null;
  targetId: string | null;
  ip: string | null;
  ok: boolean;
  details: Record<string, unknown> | null;
}

/** The audit trail: records, not log lines. Writes are awaited so an action is never unaudited. */
export class AuditLog {
  private readonly pending = new Map<
    string,
    { e: AuditEvent; count: number; id: Promise<number | null>; timer: NodeJS.Timeout; lastTargetId: string | undefined }
  >();

  private readonly throttle = new Map<string, { written: number; latest: AuditEvent | null; count: number; timer: NodeJS.Timeout }>();
  /** Throttled writes in flight (flush() waits for them). */
  private readonly writes = new Set<Promise<void>>();

  constructor(
    private readonly db: Db,
    private readonly opts: { refusalWindowMs?: number; onError?(err: unknown): void } = {},
  ) {}

  /**
   * A refused action (a viewer's `term.open`, say). The first refusal is written at once; repeats by
   * the same actor of the same action on the same target within the window only raise that row's
   * `count` (written when the window ends): a refusal spam is one row per window, not a write each.
   * `anyTarget`: repeats on any target share the row (the refusal does not depend on the target, and
   * a caller could otherwise write a row per message by naming a new target each time); the row
   * keeps the first target and gives the last in `details.lastTargetId`.
   * Bounded: past 10,000 open windows a refusal is written on its own.
   */
  refused(e: AuditEvent, opts: { anyTarget?: boolean } = {}): void {
    const key = [e.actor.username, e.actor.ip, e.action, e.targetType, opts.anyTarget ? '*' : e.targetId, JSON.stringify(e.details ?? null)].join('\u0000');
    const p = this.pending.get(key);
    if (p) {
      p.count++;
      p.lastTargetId = e.targetId;
      return;
    }
    const first = { ...e, ok: false, details: { ...e.details, count: 1 } };
    const id = this.insert(first).catch((err: unknown) => {
      this.opts.onError?.(err);
      return null;
    });
    if (this.pending.size >= 10_000) return;
    const timer = setTimeout(() => void this.flushOne(key), this.opts.refusalWindowMs ?? 60_000);
    timer.unref();
    this.pending.set(key, { e: first, count: 1, id, timer, lastTargetId: e.targetId });
  }

  /**
   * For events a remote party can repeat at will (an agent flapping its reported policy): per `key`
   * and window, the first `burst` events are written at once; later ones fold into one row, the
   * last event with `details.coalesced` (how many it stands for), written when the window ends.
   * Bounded like refused().
   */
  throttled(key: string, e: AuditEvent, burst: number): void {
    let t = this.throttle.get(key);
    if (!t) {
      if (this.throttle.size >= 10_000) return this.write(e);
      const timer = setTimeout(() => this.throttleTrailing(key), this.opts.refusalWindowMs ?? 60_000);
      timer.unref();
      this.throttle.set(key, (t = { written: 0, latest: null, count: 0, timer }));
    }
    if (t.written < burst) {
      t.written++;
      return this.write(e);
    }
    t.latest = e;
    t.count++;
  }

  /** Ends a throttle window, writing its folded event if any. */
  private throttleTrailing(key: string): void {
    const t = this.throttle.get(key);
    if (!t) return;
    this.throttle.delete(key);
    clearTimeout(t.timer);
    if (t.latest) this.write({ ...t.latest, details: { ...t.latest.details, coalesced: t.count } });
  }

  private write(e: AuditEvent): void {
    const w: Promise<void> = this.record(e)
      .catch((err: unknown) => this.opts.onError?.(err))
      .finally(() => this.writes.delete(w));
    this.writes.add(w);
  }

  /** Writes the counts of every open refusal window and the folded throttled events now (shutdown). */
  async flush(): Promise<void> {
    for (const k of [...this.throttle.keys()]) this.throttleTrailing(k);
    await Promise.all([...this.pending.keys()].map((k) => this.flushOne(k)));
    await Promise.all(this.writes);
  }

  private async flushOne(key: string): Promise<void> {
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    clearTimeout(p.timer);
    const id = await p.id;
    if (p.count === 1 || id === null) return;
    const windowSec = Math.round((this.opts.refusalWindowMs ?? 60_000) / 1000);
    const last = p.lastTargetId !== p.e.targetId ? { lastTargetId: p.lastTargetId ?? null } : {};
    await this.db('audit_log')
      .where({ id })
      .update({ details: JSON.stringify({ ...p.e.details, count: p.count, windowSec, ...last }) })
      .catch((err: unknown) => this.opts.onError?.(err));
  }

  private async insert(e: AuditEvent): Promise<number> {
    const res = await this.db('audit_log').insert(
      {
        at: e.at ?? Date.now(),
        actor: e.actor.username,
        role: e.actor.role,
        action: e.action,
        target_type: e.targetType ?? null,
        target_id: e.targetId ?? null,
        ip: e.actor.ip,
        ok: e.ok ?? true,
        details: e.details ? JSON.stringify(e.details) : null,
      },
      ['id'],
    );
    const first = res[0] as unknown;
    return typeof first === 'object' && first !== null ? Number((first as { id: number }).id) : Number(first);
  }

  async record(e: AuditEvent): Promise<void> {
    await this.db('audit_log').insert({
      at: e.at ?? Date.now(),
      actor: e.actor.username,
      role: e.actor.role,
      action: e.action,
      target_type: e.targetType ?? null,
      target_id: e.targetId ?? null,
      ip: e.actor.ip,
      ok: e.ok ?? true,
      details: e.details ? JSON.stringify(e.details) : null,
    });
  }

  /**
   * A page of the log, newest first. `action` is exact, or a prefix when it ends in `*`
   * (`terminal.*`); `actors` and `targetIds` match any of theirs.
   */
  async list(f: {
    limit: number;
    offset: number;
    action?: string;
    actor?: string;
    actors?: string[];
    targetId?: string;
    targetIds?: string[];
    targetType?: string;
    ok?: boolean;
    since?: number;
    until?: number;
  }) {
    const q = this.db('audit_log');
    if (f.action?.endsWith('*')) {
      // '!' as the escape character: a backslash would need different quoting on MySQL and SQLite.
      const prefix = f.action.slice(0, -1).replace(/[!%_]/g, (c) => `!${c}`);
      if (prefix) q.whereRaw("action like ? escape '!'", [`${prefix}%`]);
    } else if (f.action) q.where('action', f.action);
    if (f.actor) q.where('actor', f.actor);
    if (f.actors) q.whereIn('actor', f.actors);
    if (f.targetId) q.where('target_id', f.targetId);
    if (f.targetIds) q.whereIn('target_id', f.targetIds);
    if (f.targetType) q.where('target_type', f.targetType);
    if (f.ok !== undefined) q.where('ok', f.ok);
    if (f.since) q.where('at', '>=', f.since);
    if (f.until) q.where('at', '<', f.until);
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q.orderBy('id', 'desc').limit(f.limit).offset(f.offset);
    const items: AuditRow[] = rows.map((r: Record<string, unknown>) => ({
      id: Number(r['id']),
      at: new Date(Number(r['at'])).toISOString(),
      actor: String(r['actor']),
      role: (r['role'] as string | null) ?? null,
      action: String(r['action']),
      targetType: (r['target_type'] as string | null) ?? null,
      targetId: (r['target_id'] as string | null) ?? null,
      ip: (r['ip'] as string | null) ?? null,
      ok: Boolean(r['ok']),
      details: parseJson(r['details'], null),
    }));
    return { items, total: Number(n) };
  }
}
