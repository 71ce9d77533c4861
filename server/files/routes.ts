import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Request } from 'express';
import { z } from 'zod';
import {
  DistributionView,
  FileDeleted,
  FileHostView,
  FileRevisionView,
  ManagedFileDetail,
  ManagedFileList,
  ManagedFileView,
  pageOf,
} from '../../protocol/index.js';
import type { AuditLog } from '../auth/audit.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/repo.js';
import { selectAgents } from '../fleet/routes.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import { ApiError, notFound } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import type { SelectorLimits } from '../selectors/selector.js';
import { WAVE_GATE, WAVES } from '../waves/plan.js';
import { waveActionRoutes } from '../waves/routes.js';
import type { ContentStore, Received } from './content.js';
import type { DistributionEngine } from './engine.js';
import { fileView, revisionView, type FileRow, type FileRepo, type RevisionRow } from './repo.js';

/** An absolute, already normalised path (no `.`/`..` segments, no `//`, no trailing slash). */
const PATH = z
  .string()
  .min(2)
  .max(4096)
  .refine(
    (p) =>
      p.startsWith('/') &&
      !p.includes('\0') &&
      !p.endsWith('/') &&
      p
        .split('/')
        .slice(1)
        .every((s) => s !== '' && s !== '.' && s !== '..'),
    'path must be absolute and normalised (no . or .. segments, no // or trailing /)',
  );
const ACCOUNT = z
  .string()
  .regex(/^([A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10})$/, 'a user or group name (or numeric id)')
  .nullable();
const MODE = z.union([
  z.number().int().min(0).max(0o7777),
  z
    .string()
    .regex(/^0?[0-7]{3,4}$/, 'mode: octal like "0644"')
    .transform((s) => Number.parseInt(s, 8)),
]);
const TARGETS = z.union([
  z.object({ selector: z.string().max(4096) }).strict(),
  z.object({ agentIds: z.array(z.string().min(1).max(128)).min(1).max(50_000) }).strict(),
]);
const CONTENT = z
  .string()
  .max(64 * 1024 * 1024)
  .refine((s) => /^[A-Za-z0-9+/]*={0,2}$/.test(s), 'content: base64');

const CreateFile = z
  .object({
    path: PATH,
    owner: ACCOUNT.default(null),
    group: ACCOUNT.default(null),
    mode: MODE.default(0o644),
    postCommand: z.string().min(1).max(4096).nullable().default(null),
    /** First revision's bytes, base64 (small files; larger ones go raw to POST /files/:id/revisions). */
    content: CONTENT.optional(),
  })
  .strict();
const PatchFile = z
  .object({
    owner: ACCOUNT.optional(),
    group: ACCOUNT.optional(),
    mode: MODE.optional(),
    postCommand: z.string().min(1).max(4096).nullable().optional(),
  })
  .strict();
const Distribute = z
  .object({
    revision: z.number().int().positive().optional(),
    targets: TARGETS.optional(),
    selector: z.string().max(4096).optional(),
    waves: WAVES,
    maxFailures: z.number().int().min(0).default(0),
    ...WAVE_GATE,
  })
  .strict();

const FilesQuery = { ...pageShape(100, 1000), q: one().max(256).optional().describe('part of the path') };
const DeleteQuery = {
  removeFromHosts: oneOf(['true', 'false'] as const)
    .optional()
    .describe('required: `true` deletes it on the hosts too, `false` only stops managing it'),
};
const HostsQuery = {
  state: oneOf(['ok', 'drifted', 'missing'] as const).optional(),
  drifted: oneOf(['true', 'false'] as const)
    .optional()
    .describe('`true`: drifted or missing'),
};
const DistributionPage = pageShape();
const RevisionBody = z.object({ content: CONTENT }).strict();

export interface FileRouteDeps {
  repo: FileRepo;
  content: ContentStore;
  engine: DistributionEngine;
  fleet: Fleet;
  audit: AuditLog;
  selectorLimits: SelectorLimits;
  /** Largest revision accepted (MUSTER_FILE_MAX_BYTES), reported with the list. */
  maxBytes: number;
}

/** /api/files and /api/distributions. */
export function fileRoutes(d: FileRouteDeps): ApiRouter {
  const r = new ApiRouter();
  const pathKey = (p: string) => createHash('sha256').update(p).digest('hex');
  const mustFile = async (req: Request): Promise<FileRow> => {
    const f = await d.repo.getFile(String(req.params['id']));
    if (!f) throw notFound('file');
    return f;
  };
  const hostViews = async (fileId: string): Promise<FileHostView[]> =>
    (await d.repo.hosts(fileId)).map((h) => ({
      agentId: h.agentId,
      agentName: d.fleet.get(h.agentId)?.name ?? null,
      revision: h.revision,
      sha256: h.sha256,
      state: h.state,
      reason: h.reason,
      updatedAt: new Date(h.updatedAt).toISOString(),
    }));

  /** Stores a received upload as the file's next revision (content first, then the row). */
  const addRevision = async (req: Request, f: FileRow, got: Received): Promise<RevisionRow> => {
    await d.content.commit(got, f.id);
    const rev = await d.repo.addRevision(f.id, { sha256: got.sha256, size: got.size, createdBy: actorOf(req).username, createdAt: Date.now() });
    if (!rev) throw notFound('file');
    await d.audit.record({
      actor: actorOf(req),
      action: 'file.revision',
      targetType: 'file',
      targetId: f.id,
      details: { path: f.path, revision: rev.revision, sha256: rev.sha256, size: rev.size },
    });
    return rev;
  };

  const receiveBody = async (req: Request): Promise<Received> => {
    if (req.is('application/octet-stream')) {
      const declared = req.headers['content-length'] === undefined ? null : Number(req.headers['content-length']);
      try {
        return await d.content.receive(req, Number.isFinite(declared) ? declared : null);
      } catch (err) {
        // Refused before the body was read to its end: the rest of it would be taken for the
        // next request on this connection, so the answer closes it.
        if (!req.complete) req.res?.setHeader('Connection', 'close');
        throw err;
      }
    }
    const body = RevisionBody.parse(req.body);
    const buf = Buffer.from(body.content, 'base64');
    return d.content.receive(buf, buf.length);
  };

  r.get('/files', { summary: 'List managed files', role: 'viewer', query: FilesQuery, responses: { 200: ManagedFileList } }, async (req, res) => {
    const q = parseQuery(req, FilesQuery);
    const { items, total } = await d.repo.listFiles(q.limit, q.offset, q.q);
    res.json({ items: items.map((i) => fileView(i.file, i.hosts, i.drifted)), total, maxBytes: d.maxBytes });
  });

  r.post(
    '/files',
    {
      summary: 'Manage a file',
      description: 'Its path, owner, group, mode and post-apply command; `content` (base64) is revision 1. Audited.',
      role: 'admin',
      body: CreateFile,
      responses: { 201: ManagedFileView },
    },
    async (req, res) => {
      const body = CreateFile.parse(req.body);
      const key = pathKey(body.path);
      if (await d.repo.pathTaken(key)) throw new ApiError('conflict', `${body.path} is already a managed file`);
      const now = Date.now();
      const f: FileRow = {
        id: randomUUID(),
        path: body.path,
        owner: body.owner,
        group: body.group,
        mode: body.mode,
        postCommand: body.postCommand,
        latestRevision: 0,
        createdBy: actorOf(req).username,
        createdAt: now,
        updatedAt: now,
        deletedAt: null,
      };
      const got = body.content !== undefined ? await d.content.receive(Buffer.from(body.content, 'base64'), null) : null;
      try {
        await d.repo.insertFile(f, key);
      } catch (err) {
        if (got) d.content.discard(got);
        if (await d.repo.pathTaken(key)) throw new ApiError('conflict', `${body.path} is already a managed file`);
        throw err;
      }
      await d.audit.record({
        actor: actorOf(req),
        action: 'file.create',
        targetType: 'file',
        targetId: f.id,
        details: { path: f.path, owner: f.owner, group: f.group, mode: f.mode.toString(8), postCommand: f.postCommand },
      });
      if (got) {
        try {
          f.latestRevision = (await addRevision(req, f, got)).revision;
        } finally {
          d.content.discard(got);
        }
      }
      res.status(201).json(fileView(f));
    },
  );

  r.get(
    '/files/:id',
    { summary: 'One managed file with its revisions, hosts and latest distributions', role: 'viewer', responses: { 200: ManagedFileDetail } },
    async (req, res) => {
      const f = await mustFile(req);
      const hosts = await hostViews(f.id);
      res.json({
        ...fileView(f, hosts.length, hosts.filter((h) => h.state !== 'ok').length),
        revisions: (await d.repo.revisions(f.id)).map(revisionView),
        hosts,
        distributions: (await d.engine.list(f.id, 20, 0)).items,
      });
    },
  );

  r.patch(
    '/files/:id',
    { summary: "Change a managed file's owner, group, mode or command", role: 'admin', body: PatchFile, responses: { 200: ManagedFileView } },
    async (req, res) => {
      const f = await mustFile(req);
      const body = PatchFile.parse(req.body);
      const before = { owner: f.owner, group: f.group, mode: f.mode, postCommand: f.postCommand };
      Object.assign(f, Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined)), { updatedAt: Date.now() });
      await d.repo.updateFile(f);
      await d.audit.record({ actor: actorOf(req), action: 'file.update', targetType: 'file', targetId: f.id, details: { path: f.path, before, after: body } });
      res.json(fileView(f));
    },
  );

  r.delete(
    '/files/:id',
    {
      summary: 'Stop managing a file',
      description: '`removeFromHosts` is required; 409 while a distribution of it runs. Audited.',
      role: 'admin',
      query: DeleteQuery,
      responses: { 200: FileDeleted },
    },
    async (req, res) => {
      const f = await mustFile(req);
      const q = parseQuery(req, DeleteQuery);
      if (q.removeFromHosts === undefined)
        throw new ApiError('bad_request', 'say removeFromHosts=true (delete it on the hosts too) or removeFromHosts=false (only stop managing it)');
      const active = await d.engine.activeFor(f.id);
      if (active)
        throw new ApiError('conflict', `distribution ${active.id} of this file is ${active.state}; cancel it first`, 409, { distributionId: active.id });
      const remove = q.removeFromHosts === 'true';
      const holders = (await d.repo.hosts(f.id)).map((h) => h.agentId);
      await d.repo.markDeleted(f.id, Date.now());
      let distribution = null;
      if (remove && holders.length) {
        const agents = holders.map((id) => d.fleet.get(id)).filter((a): a is AgentRecord => Boolean(a));
        const row = await d.engine.create(
          {
            file: f,
            revision: null,
            kind: 'remove',
            selector: agents.map((a) => a.id).join(','),
            waves: ['100%'],
            maxFailures: agents.length,
            actor: actorOf(req),
          },
          agents,
        );
        distribution = await d.engine.runs.view(row.id, false);
      }
      await d.audit.record({
        actor: actorOf(req),
        action: 'file.delete',
        targetType: 'file',
        targetId: f.id,
        details: { path: f.path, removeFromHosts: remove, hosts: holders.length, distributionId: distribution?.id ?? null },
      });
      res.json({ deleted: true, removeFromHosts: remove, distribution });
    },
  );

  r.post(
    '/files/:id/revisions',
    {
      summary: 'Upload a new revision',
      description: 'JSON `{content}` (base64), or the bytes as the raw body (`Content-Type: application/octet-stream`, for large files). Audited.',
      role: 'admin',
      body: RevisionBody,
      responses: { 201: FileRevisionView },
    },
    async (req, res) => {
      const f = await mustFile(req);
      const got = await receiveBody(req);
      try {
        res.status(201).json(revisionView(await addRevision(req, f, got)));
      } finally {
        d.content.discard(got);
      }
    },
  );

  r.get(
    '/files/:id/revisions',
    { summary: 'Revisions of a managed file', role: 'viewer', responses: { 200: pageOf(FileRevisionView, 'FileRevisionList') } },
    async (req, res) => {
      const f = await mustFile(req);
      const items = (await d.repo.revisions(f.id)).map(revisionView);
      res.json({ items, total: items.length });
    },
  );

  // The bytes may be a configuration with secrets in it: operators and up.
  r.get(
    '/files/:id/revisions/:rev/content',
    {
      summary: 'Bytes of a revision',
      description: 'Operators and up (a configuration may hold secrets). Header X-Muster-Sha256.',
      role: 'operator',
      responses: { 200: { media: 'application/octet-stream', description: "the revision's bytes" } },
    },
    async (req, res) => {
      const f = await mustFile(req);
      const rev = await d.repo.getRevision(f.id, Number(req.params['rev']));
      if (!rev) throw notFound('revision');
      // Uploaded to another node: copied from the shared store first.
      const file = await d.content.ensure(f.id, rev.sha256).catch(() => null);
      if (!file) throw notFound('revision');
      res.setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('Content-Length', String(rev.size));
      res.setHeader('X-Muster-Sha256', rev.sha256);
      await pipeline(fs.createReadStream(file), res);
    },
  );

  const distribute = async (req: Request, f: FileRow, body: z.infer<typeof Distribute>, rollback: boolean) => {
    let revisionNo = body.revision ?? f.latestRevision;
    const hosts = await d.repo.hosts(f.id);
    if (rollback && body.revision === undefined) {
      // The revision before the one the hosts hold now (the newest they hold, if they differ).
      const held = Math.max(0, ...hosts.map((h) => h.revision));
      revisionNo = (held || f.latestRevision) - 1;
      if (revisionNo < 1) throw new ApiError('conflict', 'no earlier revision to roll back to');
    }
    const rev = revisionNo > 0 ? await d.repo.getRevision(f.id, revisionNo) : null;
    if (!rev)
      throw new ApiError(
        revisionNo > 0 ? 'not_found' : 'conflict',
        revisionNo > 0 ? `no revision ${revisionNo}` : 'the file has no revision yet; upload one first',
      );
    let agents: AgentRecord[];
    let selector: string;
    const targets = body.targets ?? (body.selector !== undefined ? { selector: body.selector } : null);
    if (targets && 'agentIds' in targets) {
      agents = targets.agentIds.map((id) => d.fleet.get(id)).filter((a): a is AgentRecord => Boolean(a));
      selector = targets.agentIds.join(',');
    } else if (targets) {
      agents = selectAgents(d.fleet, targets.selector, undefined, d.selectorLimits);
      selector = targets.selector;
    } else if (rollback) {
      // Rollback without targets: every host that holds the file.
      agents = hosts.map((h) => d.fleet.get(h.agentId)).filter((a): a is AgentRecord => Boolean(a));
      selector = agents.map((a) => a.id).join(',');
    } else {
      throw new ApiError('bad_request', 'targets: give {selector} or {agentIds}');
    }
    const row = await d.engine.create(
      {
        file: f,
        revision: rev,
        kind: 'apply',
        selector,
        waves: body.waves,
        maxFailures: body.maxFailures,
        soakSeconds: body.soakSeconds,
        approval: body.approval,
        actor: actorOf(req),
      },
      agents,
    );
    await d.audit.record({
      actor: actorOf(req),
      action: rollback ? 'file.rollback' : 'file.distribute',
      targetType: 'file',
      targetId: f.id,
      details: {
        path: f.path,
        revision: rev.revision,
        distributionId: row.id,
        selector,
        targets: agents.length,
        waves: body.waves,
        maxFailures: body.maxFailures,
        soakSeconds: body.soakSeconds,
        approval: body.approval,
      },
    });
    return d.engine.runs.view(row.id, true);
  };

  r.post(
    '/files/:id/distributions',
    {
      summary: 'Distribute a revision',
      description: 'Puts a revision (default: the latest) on the target hosts in waves. Audited.',
      role: 'operator',
      body: Distribute,
      responses: { 201: DistributionView },
    },
    async (req, res) => {
      const f = await mustFile(req);
      res.status(201).json(await distribute(req, f, Distribute.parse(req.body ?? {}), false));
    },
  );

  r.post(
    '/files/:id/rollback',
    {
      summary: 'Roll a file back',
      description: 'Distributes the revision before the one the hosts hold (or `revision`), by default to every host that holds the file. Audited.',
      role: 'operator',
      body: Distribute,
      responses: { 201: DistributionView },
    },
    async (req, res) => {
      const f = await mustFile(req);
      res.status(201).json(await distribute(req, f, Distribute.parse(req.body ?? {}), true));
    },
  );

  r.get(
    '/files/:id/distributions',
    {
      summary: 'Distributions of a managed file',
      role: 'viewer',
      query: DistributionPage,
      responses: { 200: pageOf(DistributionView, 'DistributionList') },
    },
    async (req, res) => {
      const f = await mustFile(req);
      const { limit, offset } = parseQuery(req, DistributionPage);
      res.json(await d.engine.list(f.id, limit, offset));
    },
  );

  r.get(
    '/files/:id/hosts',
    {
      summary: 'Hosts of a managed file',
      description: 'What each host reported: the revision it holds, drift.',
      role: 'viewer',
      query: HostsQuery,
      responses: { 200: pageOf(FileHostView, 'FileHostList') },
    },
    async (req, res) => {
      const f = await mustFile(req);
      const q = parseQuery(req, HostsQuery);
      let items = await hostViews(f.id);
      if (q.state) items = items.filter((h) => h.state === q.state);
      if (q.drifted === 'true') items = items.filter((h) => h.state !== 'ok');
      res.json({ items, total: items.length });
    },
  );

  r.get('/distributions/:id', { summary: 'One distribution with its targets', role: 'viewer', responses: { 200: DistributionView } }, async (req, res) => {
    res.json(await d.engine.runs.view(String(req.params['id']), true));
  });

  waveActionRoutes(r, { plural: 'distributions', noun: 'distribution', role: 'operator', engine: d.engine.runs, audit: d.audit, view: DistributionView });

  return r;
}
