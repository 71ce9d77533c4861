import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pageOf, TerminalSessionView, TerminalUploadView, terminalDenial } from '../../protocol/index.js';
import { roleAtLeast } from '../auth/auth-service.js';
import type { Core } from '../core.js';
import { ApiRouter } from '../http/api-router.js';
import { ContentStore, type Received } from '../files/content.js';
import { actorOf, principal } from '../http/context.js';
import { ApiError, notFound } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import { asciicastLines } from './recorder.js';
import { terminalView, type TerminalRepo } from './repo.js';
import type { TerminalService } from './service.js';

const UploadQuery = { name: one().min(1).max(255) };
const DownloadQuery = { path: one().min(1).max(4096) };

const TerminalsQuery = { ...pageShape(), status: oneOf(['open', 'closed']).optional(), agentId: one().max(128).optional(), user: one().max(128).optional() };

/** GET /api/terminals (viewer+) and GET /api/terminals/:id/recording (the owner or an admin). */
export function terminalRoutes(core: Core, repo: TerminalRepo, service: TerminalService): ApiRouter {
  const r = new ApiRouter();

  const view = (row: Awaited<ReturnType<TerminalRepo['get']>> & object) => {
    const live = service.sessions.get(row.id);
    return terminalView(
      row,
      core.fleet.get(row.agentId)?.name ?? null,
      live && {
        bytesIn: live.bytesIn,
        bytesOut: live.received,
        cols: live.cols,
        rows: live.rows,
        attached: Boolean(live.controller()),
        recordingBytes: live.recorder?.stats.bytes ?? 0,
        recordingTruncated: live.recorder?.stats.truncated ?? false,
      },
    );
  };

  r.get(
    '/terminals',
    {
      summary: 'List terminal sessions',
      description: 'Newest first; live sessions carry live byte counts.',
      role: 'viewer',
      query: TerminalsQuery,
      responses: { 200: pageOf(TerminalSessionView, 'TerminalSessionList') },
    },
    async (req, res) => {
      const q = parseQuery(req, TerminalsQuery);
      const { items, total } = await repo.list({ limit: q.limit, offset: q.offset, agentId: q.agentId, username: q.user, status: q.status });
      res.json({ items: items.map(view), total });
    },
  );

  r.get('/terminals/:id', { summary: 'One terminal session', role: 'viewer', responses: { 200: TerminalSessionView } }, async (req, res) => {
    const row = await repo.get(String(req.params['id']));
    if (!row) throw notFound('terminal session');
    res.json(view(row));
  });

  r.get(
    '/terminals/:id/recording',
    {
      summary: 'Recording of a terminal session',
      description: 'asciicast v2; only the operator who opened the session, or an admin (403 otherwise).',
      role: 'viewer',
      responses: { 200: { media: 'application/x-asciicast', description: 'the recording (asciicast v2), as an attachment' } },
    },
    async (req, res) => {
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
      // Streamed (not sendFile): the data dir may sit under a dot-directory, which send() refuses.
      // A recording is stored as it was received (recorder.ts) and turned into asciicast here; one
      // an earlier version wrote as asciicast (`.cast`) goes out as it is.
      if (file.endsWith('.cast')) {
        res.setHeader('Content-Length', String(fs.statSync(file).size));
        await pipeline(fs.createReadStream(file), res);
      } else await pipeline(Readable.from(asciicastLines(file)), res);
    },
  );

  // Terminal file transfer: the operator who opened a live session, through its agent.
  const received = new ContentStore(
    path.join(core.dataDir, 'transfers'),
    core.config.terminalTransferMaxBytes,
    core.disk,
    'MUSTER_TERMINAL_TRANSFER_MAX_BYTES',
  );
  const transferSession = (req: Parameters<typeof principal>[0], action: string) => {
    const id = String(req.params['id']);
    const p = principal(req);
    const s = service.sessions.get(id);
    if (!s || !s.live) throw new ApiError('not_found', 'no such live terminal session on this server');
    const refuse = (code: 'forbidden' | 'policy_denied', message: string) => {
      core.audit.refused({ actor: actorOf(req), action, targetType: 'terminal', targetId: id, ok: false, details: { why: code } });
      return new ApiError(code, message);
    };
    if (s.owner.id !== p.id) throw refuse('forbidden', 'only the operator who opened the session can transfer files through it');
    if (s.state !== 'open') throw new ApiError('conflict', 'the session is not open (yet, or any more)');
    const denied = terminalDenial(core.fleet.get(s.agentId)?.policy);
    if (denied) throw refuse('policy_denied', denied);
    return s;
  };

  r.post(
    '/terminals/:id/upload',
    {
      summary: "Upload a file into a terminal's current directory",
      description:
        "The raw bytes (`Content-Type: application/octet-stream`, at most MUSTER_TERMINAL_TRANSFER_MAX_BYTES) become `name` in the current directory of the session's shell, " +
        'through its agent; nothing is overwritten (409). Only the operator who opened the session; the host policy applies (terminals, allowedPaths). Audited with path, size and sha256.',
      role: 'operator',
      query: UploadQuery,
      body: { media: 'application/octet-stream', description: "the file's bytes" },
      responses: { 201: TerminalUploadView },
    },
    async (req, res) => {
      const s = transferSession(req, 'terminal.upload');
      const q = parseQuery(req, UploadQuery);
      if (q.name === '.' || q.name === '..' || q.name.includes('/') || q.name.includes('\0'))
        throw new ApiError('bad_request', 'name must be a plain file name (no "/", not "." or "..")');
      if (!req.is('application/octet-stream')) throw new ApiError('bad_request', 'send the bytes as Content-Type: application/octet-stream');
      const declared = req.headers['content-length'] === undefined ? null : Number(req.headers['content-length']);
      let got: Received;
      try {
        got = await received.receive(req, Number.isFinite(declared) ? declared : null);
      } catch (err) {
        // Refused before the body was read to its end: the rest would be taken for the next request.
        if (!req.complete) res.setHeader('Connection', 'close');
        if (err instanceof ApiError && err.code === 'payload_too_large') {
          core.audit.refused({
            actor: actorOf(req),
            action: 'terminal.upload',
            targetType: 'terminal',
            targetId: s.id,
            ok: false,
            details: { why: 'payload_too_large', name: q.name, declared },
          });
        }
        throw err;
      }
      try {
        const out = await service.transfers.upload(s, actorOf(req), q.name, got);
        res.status(201).json({ sessionId: s.id, ...out });
      } finally {
        received.discard(got);
      }
    },
  );

  r.get(
    '/terminals/:id/download',
    {
      summary: 'Download a file through a terminal',
      description:
        "`path` absolute, or relative to the current directory of the session's shell; at most MUSTER_TERMINAL_TRANSFER_MAX_BYTES. Streamed from the agent with flow control. " +
        'Only the operator who opened the session; the host policy applies (terminals, allowedPaths). Header X-Muster-Path: the resolved path. Audited with path, size and sha256.',
      role: 'operator',
      query: DownloadQuery,
      responses: { 200: { media: 'application/octet-stream', description: 'the file, as an attachment' } },
    },
    async (req, res) => {
      const s = transferSession(req, 'terminal.download');
      const q = parseQuery(req, DownloadQuery);
      await service.transfers.download(s, actorOf(req), q.path, res);
    },
  );

  return r;
}
