import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { promisify } from 'node:util';
import type { Request } from 'express';
import { z } from 'zod';
import { ArtifactView, LatestArtifactView, pageOf, RolloutPreview, RolloutView } from '../../protocol/index.js';
import type { AuditLog } from '../auth/audit.js';
import type { SharedBlobs } from '../cluster/blobs.js';
import { safeEqual, sha256 } from '../auth/crypto.js';
import type { Fleet } from '../fleet/fleet.js';
import { selectAgents } from '../fleet/routes.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import type { SelectorLimits } from '../selectors/selector.js';
import { ApiError, notFound } from '../http/errors.js';
import { one, pageShape, parseQuery } from '../http/query.js';
import { WAVE_GATE, WAVES, waveSizes } from '../waves/plan.js';
import { waveActionRoutes } from '../waves/routes.js';
import type { RolloutEngine, RolloutPackage } from './engine.js';
import { artifactView, type ArtifactRow, type UpdateRepo } from './repo.js';

const run = promisify(execFile);
const VERSION = z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$/, 'version: letters, digits, . + _ - (max 64)');
const SIGNATURE = z
  .string()
  .max(512)
  .refine((s) => Buffer.from(s, 'base64').length === 64, 'signature: base64 of a 64-byte ed25519 signature');
const SHA256 = z.string().regex(/^[0-9a-f]{64}$/, 'sha256: 64 lowercase hex digits');
const ARCH = z
  .string()
  .regex(/^[a-z0-9_]{1,32}$/, 'arch: lowercase letters, digits and _ (max 32), given once')
  .nullable();

const CreateRollout = z
  .object({
    artifactId: z.string().min(1).max(36).optional(),
    url: z.string().url().max(4096).optional(),
    version: VERSION.optional(),
    size: z.number().int().positive().optional(),
    sha256: SHA256.optional(),
    signature: SIGNATURE.optional(),
    selector: z.string().max(4096).default('all'),
    waves: WAVES,
    maxFailures: z.number().int().min(0).default(0),
    allowDowngrade: z.boolean().default(false),
    ...WAVE_GATE,
  })
  .strict();
type RolloutBody = z.infer<typeof CreateRollout>;

const UploadQuery = {
  filename: one().max(255).optional().describe('or X-Muster-Filename; `muster-agent-<version>-linux-<arch>.tar.gz` names the version and arch'),
  version: one().optional().describe('or X-Muster-Version'),
  signature: one().optional().describe('or X-Muster-Signature: base64 ed25519 signature'),
  sha256: one().optional().describe('or X-Muster-Sha256: refuse the upload unless the body has this digest'),
  arch: one().optional(),
};
const DownloadQuery = { arch: one().max(32).optional().describe('with `latest`: the newest stable package for this arch') };
const LatestQuery = { arch: one().max(32).optional() };
const NO_LATEST = 'no package is marked stable and none completed a rollout: mark one stable (POST /api/artifacts/{id}/stable) first';
const ListPage = pageShape();

export interface UpdateRouteDeps {
  repo: UpdateRepo;
  engine: RolloutEngine;
  fleet: Fleet;
  audit: AuditLog;
  artifactDir: string;
  /** In a cluster: where every node reads packages uploaded to another node (null on one node). */
  blobs: SharedBlobs | null;
  maxArtifactBytes: number;
  selectorLimits: SelectorLimits;
  /** Whether an installer's enrollment token may download packages (it is not consumed). */
  enrollTokenValid(token: string): Promise<boolean>;
}

/** /api/artifacts and /api/rollouts. */
export function updateRoutes(d: UpdateRouteDeps): ApiRouter {
  const r = new ApiRouter();
  const fileOf = (id: string) => path.join(d.artifactDir, `${id}.tar.gz`);
  const blobOf = (id: string) => `artifacts/${id}`;
  /** Copies of packages from the shared store under way (one per package, whoever asks). */
  const fetching = new Map<string, Promise<boolean>>();
  /** Whether the package is in this node's data dir, after copying it from the shared store if need be. */
  const present = async (id: string): Promise<boolean> => {
    if (fs.existsSync(fileOf(id))) return true;
    const { blobs } = d;
    if (!blobs) return false;
    let p = fetching.get(id);
    if (!p) {
      p = blobs.fetch(blobOf(id), fileOf(id)).finally(() => fetching.delete(id));
      fetching.set(id, p);
    }
    return p;
  };

  r.post(
    '/artifacts',
    {
      summary: 'Upload an agent package',
      description: 'The .tar.gz as the raw body; its ./VERSION must match the version given. Audited.',
      role: 'admin',
      query: UploadQuery,
      body: { media: 'application/octet-stream', description: 'the agent package (.tar.gz)' },
      responses: { 201: ArtifactView },
    },
    async (req, res) => {
      if (req.is('application/json') || req.is('multipart/*'))
        throw new ApiError('bad_request', 'send the package as the raw request body (application/octet-stream)');
      // Every input is checked before a byte of the body is stored (an upload that fails leaves nothing).
      const q = parseQuery(req, UploadQuery);
      const header = (h: string) => (typeof req.headers[h] === 'string' ? (req.headers[h] as string) : undefined);
      const filename = (q.filename ?? header('x-muster-filename') ?? '').trim();
      const fromName = /^muster-agent-(.+)-linux-([a-z0-9_]+)\.tar\.gz$/.exec(path.basename(filename));
      const version = VERSION.parse(q.version ?? header('x-muster-version') ?? fromName?.[1]);
      const signature = SIGNATURE.parse(q.signature ?? header('x-muster-signature'));
      const expectSha = q.sha256 ?? header('x-muster-sha256');
      if (expectSha !== undefined) SHA256.parse(expectSha);
      const arch = ARCH.parse(q.arch ?? fromName?.[2] ?? null);
      const declared = Number(req.headers['content-length'] ?? NaN);
      if (declared > d.maxArtifactBytes) throw new ApiError('payload_too_large', `package larger than ${d.maxArtifactBytes} bytes`);

      fs.mkdirSync(d.artifactDir, { recursive: true, mode: 0o700 });
      const id = randomUUID();
      const tmp = path.join(d.artifactDir, `.${id}.upload`);
      const hash = createHash('sha256');
      let size = 0;
      try {
        await pipeline(
          req,
          new Transform({
            transform(chunk: Buffer, _enc, cb) {
              size += chunk.length;
              if (size > d.maxArtifactBytes) return cb(new ApiError('payload_too_large', `package larger than ${d.maxArtifactBytes} bytes`));
              hash.update(chunk);
              cb(null, chunk);
            },
          }),
          fs.createWriteStream(tmp, { mode: 0o600 }),
        );
        if (size === 0) throw new ApiError('bad_request', 'empty body');
        const digest = hash.digest('hex');
        if (expectSha && expectSha !== digest) throw new ApiError('bad_request', `sha256 mismatch: body has ${digest}`);
        // The package names its own version: refuse a mislabelled upload.
        const inside = await run('tar', ['-xzOf', tmp, './VERSION'], { maxBuffer: 4096 }).then(
          (x) => x.stdout.trim(),
          () => null,
        );
        if (inside === null) throw new ApiError('bad_request', 'not a muster-agent package (no ./VERSION in a .tar.gz)');
        if (inside !== version) throw new ApiError('bad_request', `package says version ${inside}, upload says ${version}`);
        const a: ArtifactRow = {
          id,
          version,
          filename: filename ? path.basename(filename) : `muster-agent-${version}.tar.gz`,
          arch,
          size,
          sha256: digest,
          signature,
          createdBy: actorOf(req).username,
          createdAt: Date.now(),
          stable: false,
          stableBy: null,
          stableAt: null,
        };
        fs.renameSync(tmp, fileOf(id));
        try {
          // In a cluster, every node serves it: stored where all read before it is listed.
          if (d.blobs) {
            await d.blobs.put(blobOf(id), fileOf(id)).catch((err: unknown) => {
              throw new ApiError('unavailable', `could not store the package where every server node reads it (NATS object store): ${(err as Error).message}`);
            });
          }
          await d.repo.insertArtifact(a);
        } catch (err) {
          // No row, no file: a package that was never listed must not linger on disk.
          fs.rmSync(fileOf(id), { force: true });
          if (d.blobs) await d.blobs.delete(blobOf(id));
          throw err;
        }
        await d.audit.record({
          actor: actorOf(req),
          action: 'artifact.upload',
          targetType: 'artifact',
          targetId: id,
          details: { version, size, sha256: digest },
        });
        res.status(201).json(artifactView(a));
      } finally {
        fs.rmSync(tmp, { force: true });
      }
    },
  );

  r.get(
    '/artifacts',
    { summary: 'List agent packages', role: 'viewer', query: ListPage, responses: { 200: pageOf(ArtifactView, 'ArtifactList') } },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, ListPage);
      const { items, total } = await d.repo.listArtifacts(limit, offset);
      res.json({ items: items.map(artifactView), total });
    },
  );

  // Agents download with their own credentials; an installer with the enrollment token; people with a session.
  r.get(
    '/artifacts/:id/download',
    {
      summary: 'Download an agent package',
      description: 'By id, or `latest`. Headers X-Muster-Version and X-Muster-Sha256.',
      role: null,
      auth: 'Agents download with their own credentials (`Authorization: Bearer <agent secret>` and `X-Muster-Agent-Id`), an installer with an enrollment token (`X-Muster-Enroll-Token`), people with a session or API token.',
      query: DownloadQuery,
      responses: { 200: { media: 'application/gzip', description: 'the package' } },
    },
    async (req, res) => {
      if (!(await downloadAllowed(req))) throw new ApiError('unauthorized', 'agent credentials, the enrollment token or a session required');
      const id = String(req.params['id']);
      const { arch } = parseQuery(req, DownloadQuery);
      const a = id === 'latest' ? (await d.repo.latestArtifact(arch)).artifact : await d.repo.getArtifact(id);
      if (id === 'latest' && !a) throw new ApiError('not_found', NO_LATEST);
      if (!a || !(await present(a.id))) throw notFound('artifact');
      // RFC 6266/5987: any stored name (non-Latin-1, even control characters) becomes a valid
      // header, with an ASCII fallback and `filename*` carrying the exact UTF-8 name.
      res.attachment(a.filename);
      res.setHeader('Content-Type', 'application/gzip');
      res.setHeader('Content-Length', String(a.size));
      res.setHeader('X-Muster-Version', a.version);
      res.setHeader('X-Muster-Sha256', a.sha256);
      await pipeline(fs.createReadStream(fileOf(a.id)), res);
    },
  );

  async function downloadAllowed(req: Request): Promise<boolean> {
    if (req.principal) return true;
    const agentId = req.headers['x-muster-agent-id'];
    const authz = req.headers.authorization;
    if (typeof agentId === 'string' && authz?.startsWith('Bearer ')) {
      const rec = d.fleet.get(agentId);
      return Boolean(rec && rec.revokedAt == null && safeEqual(sha256(authz.slice(7).trim()), rec.secretHash));
    }
    const enroll = req.headers['x-muster-enroll-token'];
    return typeof enroll === 'string' && enroll.length <= 256 && (await d.enrollTokenValid(enroll));
  }

  r.get(
    '/artifacts/latest',
    {
      summary: 'What `latest` resolves to',
      description: 'The newest package an admin marked stable; else the newest that completed a rollout; never simply the last upload.',
      role: 'viewer',
      query: LatestQuery,
      responses: { 200: LatestArtifactView },
    },
    async (req, res) => {
      const { arch } = parseQuery(req, LatestQuery);
      const l = await d.repo.latestArtifact(arch);
      res.json({ artifact: l.artifact && artifactView(l.artifact), source: l.source, uploaded: l.uploaded });
    },
  );

  for (const stable of [true, false]) {
    (stable ? r.post.bind(r) : r.delete.bind(r))(
      '/artifacts/:id/stable',
      {
        summary: stable ? 'Mark a package stable' : 'Unmark a stable package',
        description: '`latest` (the install command, `/api/artifacts/latest/download`) is the newest stable package. Audited.',
        role: 'admin',
        responses: { 200: ArtifactView },
      },
      async (req, res) => {
        const id = String(req.params['id']);
        if (!(await d.repo.getArtifact(id))) throw notFound('artifact');
        await d.repo.setStable(id, stable, actorOf(req).username, Date.now());
        const a = (await d.repo.getArtifact(id))!;
        await d.audit.record({
          actor: actorOf(req),
          action: stable ? 'artifact.stable' : 'artifact.unstable',
          targetType: 'artifact',
          targetId: id,
          details: { version: a.version },
        });
        res.json(artifactView(a));
      },
    );
  }

  /** The package a rollout request names. */
  const packageOf = async (body: RolloutBody): Promise<RolloutPackage> => {
    if (body.artifactId) {
      const a = await d.repo.getArtifact(body.artifactId);
      if (!a) throw notFound('artifact');
      return { artifactId: a.id, version: a.version, url: null, size: a.size, sha256: a.sha256, signature: a.signature, arch: a.arch };
    }
    if (body.url && body.version && body.size && body.sha256 && body.signature) {
      return { artifactId: null, version: body.version, url: body.url, size: body.size, sha256: body.sha256, signature: body.signature, arch: null };
    }
    throw new ApiError('bad_request', 'give artifactId, or url + version + size + sha256 + signature');
  };

  r.post(
    '/rollouts/preview',
    {
      summary: 'Preview a rollout',
      description: 'What POST /api/rollouts with this body would do, without doing it: how many hosts can update, which are skipped and why, the wave sizes.',
      role: 'admin',
      body: CreateRollout,
      responses: { 200: RolloutPreview },
    },
    async (req, res) => {
      const body = CreateRollout.parse(req.body);
      const pkg = await packageOf(body);
      const agents = selectAgents(d.fleet, body.selector, undefined, d.selectorLimits).filter((a) => a.revokedAt == null);
      const skipped = new Map<string, number>();
      let update = 0;
      for (const a of agents) {
        const why = d.engine.skipReason(pkg, a);
        if (why) skipped.set(why, (skipped.get(why) ?? 0) + 1);
        else update++;
      }
      res.json({
        version: pkg.version,
        selector: body.selector,
        matched: agents.length,
        update,
        waves: waveSizes(body.waves, update),
        skipped: [...skipped].map(([reason, count]) => ({ reason, count })),
        active: await d.engine.activeRolloutId(),
      });
    },
  );

  r.post(
    '/rollouts',
    {
      summary: 'Start a rollout',
      description:
        'Updates the selected agents in waves (counts or percentages); pauses past `maxFailures`; waits `soakSeconds` and/or an approval between waves. ' +
        'An uploaded artifact, or url + version + size + sha256 + signature. Audited.',
      role: 'admin',
      body: CreateRollout,
      responses: { 201: RolloutView },
    },
    async (req, res) => {
      const body = CreateRollout.parse(req.body);
      const pkg = await packageOf(body);
      const candidates = selectAgents(d.fleet, body.selector, undefined, d.selectorLimits);
      const row = await d.engine.create(
        {
          ...pkg,
          selector: body.selector,
          waves: body.waves,
          maxFailures: body.maxFailures,
          allowDowngrade: body.allowDowngrade,
          soakSeconds: body.soakSeconds,
          approval: body.approval,
          createdBy: actorOf(req).username,
        },
        candidates,
      );
      await d.audit.record({
        actor: actorOf(req),
        action: 'rollout.create',
        targetType: 'rollout',
        targetId: row.id,
        details: {
          version: row.version,
          selector: row.selector,
          waves: row.waveSpec,
          maxFailures: row.maxFailures,
          soakSeconds: row.soakSeconds,
          approval: row.approval,
        },
      });
      res.status(201).json(await d.engine.runs.view(row.id, true));
    },
  );

  r.get(
    '/rollouts',
    { summary: 'List rollouts', role: 'viewer', query: ListPage, responses: { 200: pageOf(RolloutView, 'RolloutList') } },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, ListPage);
      res.json(await d.engine.list(limit, offset));
    },
  );

  r.get('/rollouts/:id', { summary: 'One rollout with its targets', role: 'viewer', responses: { 200: RolloutView } }, async (req, res) => {
    res.json(await d.engine.runs.view(String(req.params['id']), true));
  });

  waveActionRoutes(r, { plural: 'rollouts', noun: 'rollout', role: 'admin', engine: d.engine.runs, audit: d.audit, view: RolloutView });

  return r;
}
