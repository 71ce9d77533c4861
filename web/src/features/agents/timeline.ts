/** One timeline of what happened to a host, merged from connections, executions, terminals and audit. */
import { ApiError, api, type ListResult } from '../../api/client';

export type TimelineKind = 'connection' | 'execution' | 'terminal' | 'update' | 'admin';
export interface TimelineItem {
  key: string;
  at: string;
  kind: TimelineKind;
  title: string;
  detail: string;
  link?: string;
  state?: string;
}

async function optional<T>(p: Promise<ListResult<T>>): Promise<T[]> {
  try {
    return (await p).items;
  } catch (err) {
    // Endpoints of capabilities that are not there (404) or not for this role (403) add nothing.
    if (err instanceof ApiError && (err.status === 404 || err.status === 403 || err.status === 400)) return [];
    throw err;
  }
}

interface Conn {
  id: number;
  connectedAt: string;
  disconnectedAt: string | null;
  durationMs: number | null;
  reason: string | null;
  remoteAddress: string | null;
}
interface Exec {
  id: string;
  taskId: string;
  status: string;
  exitCode: number | null;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt?: string;
  script?: string;
}
interface Term {
  id: string;
  username?: string;
  user?: string;
  openedAt: string;
  closedAt: string | null;
  closeReason?: string | null;
  reason?: string | null;
  bytes?: number;
}
interface Audit {
  id: number;
  at: string;
  actor: string;
  action: string;
  ok: boolean;
  details: Record<string, unknown> | null;
}

/** Loads the timeline of one agent (most recent first). */
export async function loadTimeline(agentId: string, isAdmin: boolean, limit = 200): Promise<TimelineItem[]> {
  const id = encodeURIComponent(agentId);
  const [conns, execs, terms, audit] = await Promise.all([
    optional(api.get<ListResult<Conn>>(`/api/agents/${id}/connections`, { limit })),
    optional(api.get<ListResult<Exec>>('/api/executions', { agentId, limit })),
    optional(api.get<ListResult<Term>>('/api/terminals', { agentId, limit })),
    isAdmin ? optional(api.get<ListResult<Audit>>('/api/audit', { targetId: agentId, limit })) : Promise.resolve([] as Audit[]),
  ]);
  const out: TimelineItem[] = [];
  for (const c of conns) {
    out.push({
      key: `c${c.id}`,
      at: c.connectedAt,
      kind: 'connection',
      title: 'connected',
      detail: c.remoteAddress ? `from ${c.remoteAddress}` : '',
      state: 'online',
    });
    if (c.disconnectedAt)
      out.push({ key: `d${c.id}`, at: c.disconnectedAt, kind: 'connection', title: 'disconnected', detail: c.reason ?? '', state: 'offline' });
  }
  for (const e of execs) {
    const at = e.startedAt ?? e.createdAt ?? e.finishedAt;
    if (!at) continue;
    out.push({
      key: `e${e.id}`,
      at,
      kind: 'execution',
      title: `execution ${e.status}${e.exitCode != null ? ` (exit ${e.exitCode})` : ''}`,
      detail: e.script?.split('\n')[0] ?? '',
      link: `/tasks/${e.taskId}`,
      state: e.status,
    });
  }
  for (const t of terms) {
    out.push({ key: `t${t.id}`, at: t.openedAt, kind: 'terminal', title: 'terminal opened', detail: `by ${t.username ?? t.user ?? '?'}` });
    if (t.closedAt) out.push({ key: `tc${t.id}`, at: t.closedAt, kind: 'terminal', title: 'terminal closed', detail: t.closeReason ?? t.reason ?? '' });
  }
  for (const a of audit) {
    const kind: TimelineKind = a.action.startsWith('update') || a.action.startsWith('rollout') ? 'update' : 'admin';
    out.push({ key: `a${a.id}`, at: a.at, kind, title: a.action + (a.ok ? '' : ' (refused)'), detail: `by ${a.actor}` });
  }
  return out.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
}
