import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';

export interface Actor { username: string; role: string | null; ip: string | null }
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
  id: number; at: string; actor: string; role: string | null; action: string; targetType: string | null;
  targetId: string | null; ip: string | null; ok: boolean; details: Record<string, unknown> | null;
}

/** The audit trail: records, not log lines. Writes are awaited so an action is never unaudited. */
export class AuditLog {
  constructor(private readonly db: Db) {}

  async record(e: AuditEvent): Promise<void> {
    await this.db('audit_log').insert({
      at: e.at ?? Date.now(), actor: e.actor.username, role: e.actor.role, action: e.action,
      target_type: e.targetType ?? null, target_id: e.targetId ?? null, ip: e.actor.ip,
      ok: e.ok ?? true, details: e.details ? JSON.stringify(e.details) : null,
    });
  }

  async list(f: { limit: number; offset: number; action?: string; actor?: string; targetId?: string; since?: number; until?: number }) {
    const q = this.db('audit_log');
    if (f.action) q.where('action', f.action);
    if (f.actor) q.where('actor', f.actor);
    if (f.targetId) q.where('target_id', f.targetId);
    if (f.since) q.where('at', '>=', f.since);
    if (f.until) q.where('at', '<', f.until);
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q.orderBy('id', 'desc').limit(f.limit).offset(f.offset);
    const items: AuditRow[] = rows.map((r: Record<string, unknown>) => ({
      id: Number(r['id']), at: new Date(Number(r['at'])).toISOString(), actor: String(r['actor']),
      role: (r['role'] as string | null) ?? null, action: String(r['action']), targetType: (r['target_type'] as string | null) ?? null,
      targetId: (r['target_id'] as string | null) ?? null, ip: (r['ip'] as string | null) ?? null, ok: Boolean(r['ok']),
      details: parseJson(r['details'], null),
    }));
    return { items, total: Number(n) };
  }
}
