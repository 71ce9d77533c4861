import type { TerminalSessionView } from '../../protocol/index.js';
import type { Db } from '../db/db.js';

export interface NewTerminalRow {
  id: string;
  agentId: string;
  userId: number;
  username: string;
  ip: string | null;
  node: string;
  cols: number;
  rows: number;
  openedAt: number;
  recording: string | null;
}
export interface ClosedTerminal {
  closedAt: number;
  reason: string;
  exitCode: number | null;
  bytesIn: number;
  bytesOut: number;
  recordingBytes: number;
  recordingTruncated: boolean;
}
export interface TerminalRow {
  id: string;
  agentId: string;
  userId: number;
  username: string;
  /** The server node that holds (held) the session: the one its agent was connected to. */
  node: string;
  openedAt: number;
  closedAt: number | null;
  closeReason: string | null;
  exitCode: number | null;
  cols: number;
  rows: number;
  bytesIn: number;
  bytesOut: number;
  recording: string | null;
  recordingBytes: number;
  recordingTruncated: boolean;
}

function fromDb(r: Record<string, unknown>): TerminalRow {
  const n = (v: unknown) => (v == null ? null : Number(v));
  return {
    id: String(r['id']),
    agentId: String(r['agent_id']),
    userId: Number(r['user_id']),
    username: String(r['username']),
    node: String(r['node'] ?? ''),
    openedAt: Number(r['opened_at']),
    closedAt: n(r['closed_at']),
    closeReason: (r['close_reason'] as string | null) ?? null,
    exitCode: n(r['exit_code']),
    cols: Number(r['cols']),
    rows: Number(r['rows']),
    bytesIn: Number(r['bytes_in']),
    bytesOut: Number(r['bytes_out']),
    recording: (r['recording'] as string | null) ?? null,
    recordingBytes: Number(r['recording_bytes']),
    recordingTruncated: Boolean(r['recording_truncated']),
  };
}

/** terminal_sessions: one row per session, written at open and at close. */
export class TerminalRepo {
  constructor(private readonly db: Db) {}

  async insert(r: NewTerminalRow): Promise<void> {
    await this.db('terminal_sessions').insert({
      id: r.id,
      agent_id: r.agentId,
      user_id: r.userId,
      username: r.username,
      ip: r.ip,
      node: r.node,
      cols: r.cols,
      rows: r.rows,
      opened_at: r.openedAt,
      recording: r.recording,
    });
  }

  async setPid(id: string, pid: number): Promise<void> {
    await this.db('terminal_sessions').where({ id }).update({ pid });
  }

  async close(id: string, c: ClosedTerminal): Promise<void> {
    await this.db('terminal_sessions')
      .where({ id })
      .whereNull('closed_at')
      .update({
        closed_at: c.closedAt,
        close_reason: c.reason.slice(0, 255),
        exit_code: c.exitCode,
        bytes_in: c.bytesIn,
        bytes_out: c.bytesOut,
        recording_bytes: c.recordingBytes,
        recording_truncated: c.recordingTruncated,
      });
  }

  /** Closes rows a previous run of this node left open (their shells ended with that run's sockets). */
  async closeDangling(node: string, now: number, reason: string): Promise<number> {
    return this.db('terminal_sessions').whereNull('closed_at').where({ node }).update({ closed_at: now, close_reason: reason });
  }

  async get(id: string): Promise<TerminalRow | null> {
    const r = await this.db('terminal_sessions').where({ id }).first();
    return r ? fromDb(r) : null;
  }

  async list(f: {
    limit: number;
    offset: number;
    agentId?: string;
    username?: string;
    status?: 'open' | 'closed';
  }): Promise<{ items: TerminalRow[]; total: number }> {
    const q = this.db('terminal_sessions');
    if (f.agentId) q.where('agent_id', f.agentId);
    if (f.username) q.where('username', f.username);
    if (f.status === 'open') q.whereNull('closed_at');
    if (f.status === 'closed') q.whereNotNull('closed_at');
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q.orderBy('opened_at', 'desc').orderBy('id', 'desc').limit(f.limit).offset(f.offset);
    return { items: rows.map(fromDb), total: Number(n) };
  }
}

/** The REST view of a row, with live figures when the session is open on this node. */
export function terminalView(
  r: TerminalRow,
  agentName: string | null,
  live?: { bytesIn: number; bytesOut: number; cols: number; rows: number; attached: boolean; recordingBytes: number; recordingTruncated: boolean },
): TerminalSessionView {
  const iso = (t: number | null) => (t == null ? null : new Date(t).toISOString());
  return {
    id: r.id,
    agentId: r.agentId,
    agentName,
    username: r.username,
    openedAt: iso(r.openedAt)!,
    closedAt: iso(r.closedAt),
    closeReason: r.closeReason,
    exitCode: r.exitCode,
    cols: live?.cols ?? r.cols,
    rows: live?.rows ?? r.rows,
    bytesIn: live?.bytesIn ?? r.bytesIn,
    bytesOut: live?.bytesOut ?? r.bytesOut,
    status: r.closedAt == null ? 'open' : 'closed',
    attached: live?.attached ?? false,
    recording: r.recording != null,
    recordingBytes: live?.recordingBytes ?? r.recordingBytes,
    recordingTruncated: live?.recordingTruncated ?? r.recordingTruncated,
  };
}
