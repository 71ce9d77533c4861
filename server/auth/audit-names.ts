import type { Db } from '../db/db.js';
import type { AuditRow } from './audit.js';

/** Where the name of each kind of audit target lives (table, id column, name column). */
const NAMED: Record<string, { table: string; id: string; name: string; numeric?: boolean }> = {
  user: { table: 'users', id: 'id', name: 'username', numeric: true },
  token: { table: 'api_tokens', id: 'id', name: 'name', numeric: true },
  task: { table: 'tasks', id: 'id', name: 'name' },
  script: { table: 'scripts', id: 'id', name: 'name' },
  schedule: { table: 'schedules', id: 'id', name: 'name' },
  file: { table: 'managed_files', id: 'id', name: 'path' },
  artifact: { table: 'artifacts', id: 'id', name: 'version' },
  rollout: { table: 'rollouts', id: 'id', name: 'version' },
  enrollment_token: { table: 'enrollment_tokens', id: 'id', name: 'name' },
  notification_rule: { table: 'notification_rules', id: 'id', name: 'name' },
  agent_config: { table: 'agent_config_rules', id: 'id', name: 'description' },
};

/** Types whose targets can be found by an exact name in the audit filter. */
/** (Not tasks: their names are not indexed, and the history searches them.) */
const SEARCHABLE = ['user', 'script', 'schedule', 'file', 'enrollment_token', 'notification_rule'] as const;

export interface NamedAuditRow extends AuditRow {
  /** The actor as people know it: an agent actor (`agent:<id>`) by the agent's name. */
  actorName: string | null;
  /** The target's name (a user's username, an agent's name, a file's path …), null when unknown. */
  targetName: string | null;
}

/**
 * Names for the ids in one page of audit rows: one query per kind of target on the page (a page is
 * at most a few hundred rows), agents from the in-memory fleet. A target deleted since keeps the
 * name its record gave (details.name, .username or .path) when it had one.
 */
export async function nameAuditRows(db: Db, agentName: (id: string) => string | undefined, rows: AuditRow[]): Promise<NamedAuditRow[]> {
  const byType = new Map<string, Set<string>>();
  for (const r of rows) {
    if (!r.targetType || !r.targetId) continue;
    let s = byType.get(r.targetType);
    if (!s) byType.set(r.targetType, (s = new Set()));
    s.add(r.targetId);
  }
  const names = new Map<string, string>();
  const key = (type: string, id: string) => `${type}\u0000${id}`;
  await Promise.all(
    [...byType].map(async ([type, ids]) => {
      if (type === 'agent') {
        for (const id of ids) {
          const n = agentName(id);
          if (n !== undefined) names.set(key(type, id), n);
        }
        return;
      }
      if (type === 'terminal') {
        const rs = (await db('terminal_sessions')
          .select('id', 'agent_id')
          .whereIn('id', [...ids])) as { id: string; agent_id: string }[];
        for (const r of rs) names.set(key(type, r.id), `on ${agentName(r.agent_id) ?? r.agent_id}`);
        return;
      }
      if (type === 'distribution') {
        const rs = (await db('file_distributions as d')
          .join('managed_files as f', 'f.id', 'd.file_id')
          .select('d.id', 'd.revision', 'f.path')
          .whereIn('d.id', [...ids])) as { id: string; revision: number | null; path: string }[];
        for (const r of rs) names.set(key(type, r.id), r.revision == null ? r.path : `${r.path} rev ${r.revision}`);
        return;
      }
      const t = NAMED[type];
      if (!t) return;
      const wanted = t.numeric ? [...ids].filter((i) => /^\d{1,15}$/.test(i)).map(Number) : [...ids];
      if (wanted.length === 0) return;
      const rs = (await db(t.table).select({ id: t.id, name: t.name }).whereIn(t.id, wanted)) as { id: string | number; name: string | null }[];
      for (const r of rs) if (r.name != null) names.set(key(type, String(r.id)), String(r.name));
    }),
  );
  return rows.map((r) => {
    const d = (r.details ?? {}) as Record<string, unknown>;
    const recorded = [d['name'], d['username'], d['path']].find((v): v is string => typeof v === 'string' && v !== '') ?? null;
    const targetName = r.targetType && r.targetId ? (names.get(key(r.targetType, r.targetId)) ?? recorded) : null;
    const agentActor = /^agent:(.+)$/.exec(r.actor);
    const actorName = agentActor ? `agent ${agentName(agentActor[1]!) ?? agentActor[1]!}` : r.actor;
    return { ...r, actorName, targetName };
  });
}

/**
 * The target ids an audit filter's `target` text stands for: the text itself (an id), and every
 * agent, user, script, schedule, managed file, enrollment token or notification rule whose
 * name is exactly that text. At most `max` ids in all.
 */
export async function targetIdsNamed(db: Db, agents: Iterable<{ id: string; name: string; hostname: string }>, text: string, max = 1000): Promise<string[]> {
  const out = new Set<string>([text]);
  for (const a of agents) {
    if (out.size >= max) break;
    if (a.name === text || a.hostname === text) out.add(a.id);
  }
  const found = await Promise.all(
    SEARCHABLE.map(async (type) => {
      const t = NAMED[type]!;
      // A path or name is at most a few KB: the equality uses the unique index where there is one.
      return (await db(t.table).select({ id: t.id }).where(t.name, text).limit(max)) as { id: string | number }[];
    }),
  );
  for (const rs of found) for (const r of rs) if (out.size < max) out.add(String(r.id));
  return [...out];
}
