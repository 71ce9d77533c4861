import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pageOf, TerminalSessionView } from '../../protocol/index.js';
import { roleAtLeast } from '../auth/auth-service.js';
import type { Core } from '../core.js';
import { ApiRouter } from '../http/api-router.js';
import { principal } from '../http/context.js';
import { ApiError, notFound } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import { terminalView, type TerminalRepo } from './repo.js';
import type { TerminalService } from './service.js';

const TerminalsQuery = { ...pageShape(), status: oneOf(['open', 'closed']).optional(), agentId: one().max(128).optional(), user: one().max(128).optional() };

/** GET /api/terminals (viewer+) and GET /api/terminals/:id/recording (the owner or an admin). */
export function terminalRoutes(core: Core, repo: TerminalRepo, service: TerminalService): ApiRouter {
  const r = new ApiRouter();

  const view = (row: Awaited<ReturnType<TerminalRepo['get']>> & object) => {
    const live = service.sessions.get(row.id);
    return terminalView(row, core.fleet.get(row.agentId)?.name ?? null, live && {
      bytesIn: live.bytesIn, bytesOut: live.received, cols: live.cols, rows: live.rows, attached: Boolean(live.controller()),
      recordingBytes: live.recorder?.stats.bytes ?? 0, recordingTruncated: live.recorder?.stats.truncated ?? false,
    });
  };

  r.get('/terminals', {
    summary: 'List terminal sessions', description: 'Newest first; live sessions carry live byte counts.', role: 'viewer', query: TerminalsQuery,
    responses: { 200: pageOf(TerminalSessionView, 'TerminalSessionList') },
  }, async (req, res) => {
    const q = parseQuery(req, TerminalsQuery);
    const { items, total } = await repo.list({ limit: q.limit, offset: q.offset, agentId: q.agentId, username: q.user, status: q.status });
    res.json({ items: items.map(view), total });
  });

  r.get('/terminals/:id', { summary: 'One terminal session', role: 'viewer', responses: { 200: TerminalSessionView } }, async (req, res) => {
    const row = await repo.get(String(req.params['id']));
    if (!row) throw notFound('terminal session');
    res.json(view(row));
  });

  r.get('/terminals/:id/recording', {
    summary: 'Recording of a terminal session', description: 'asciicast v2; only the operator who opened the session, or an admin (403 otherwise).',
    role: 'viewer', responses: { 200: { media: 'application/x-asciicast', description: 'the recording (asciicast v2), as an attachment' } },
  }, async (req, res) => {
    const row = await repo.get(String(req.params['id']));
    if (!row) throw notFound('terminal session');
    const p = principal(req);
    // Recordings hold everything a shell printed: only the operator who opened it, or an admin.
    if (!(p.id === row.userId && roleAtLeast(p.role, 'operator')) && p.role !== 'admin') {
      throw new ApiError('forbidden', 'recordings are available to their operator and to admins');
    }
    if (!row.recording) throw new ApiError('not_found', 'this session was not recorded');
    const file = path.resolve(core.dataDir, row.recording);
    if (!file.startsWith(path.resolve(core.dataDir) + path.sep) || !fs.existsSync(file)) throw new ApiError('not_found', 'recording file is missing');
    res.attachment(`${row.id}.cast`);
    res.type('application/x-asciicast');
    res.setHeader('Content-Length', String(fs.statSync(file).size));
    // Streamed (not sendFile): the data dir may sit under a dot-directory, which send() refuses.
    await pipeline(fs.createReadStream(file), res);
  });

  return r;
}
