import { z } from 'zod';
import { EnrollmentInfo, EnrollmentTokenCreated, EnrollmentTokenView, Labels, pageOf } from '../../protocol/index.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import { ApiError } from '../http/errors.js';
import { pageShape, parseQuery } from '../http/query.js';
import type { AuditLog } from './audit.js';
import type { EnrollmentTokens } from './enrollment.js';

const CreateToken = z
  .object({
    name: z.string().min(1).max(128),
    /** Lifetime; default one day, at most a year. */
    ttlSec: z
      .number()
      .int()
      .min(60)
      .max(365 * 86_400)
      .default(86_400),
    /** Agents that may enroll with it; null: any number until it expires. */
    maxUses: z.number().int().min(1).max(1_000_000).nullable().default(null),
    /** Labels the agents that enroll with it get (as operator labels, over their own). */
    labels: Labels.default({}),
  })
  .strict();

const TokenPage = pageShape(100, 1000);

/** /api/enrollment (the install command) and /api/enrollment/tokens (admin). */
export function enrollmentRoutes(d: {
  tokens: EnrollmentTokens;
  audit: AuditLog;
  /** What `latest` (the package the install command downloads) resolves to. */
  latestPackage(): Promise<{ version: string | null; source: 'stable' | 'rollout' | 'none'; uploaded: number }>;
}): ApiRouter {
  const r = new ApiRouter();

  // The console's install command. With MUSTER_ENROLL_TOKEN set it carries that token, as it
  // always did; otherwise `token` is null and the command has a placeholder: the Admin →
  // Enrollment page creates a token (POST below) and shows the command with it, once.
  r.get(
    '/enrollment',
    {
      summary: 'Agent install command',
      description: 'With MUSTER_ENROLL_TOKEN set it carries that token; otherwise a placeholder for a token from POST /api/enrollment/tokens.',
      role: 'admin',
      responses: { 200: EnrollmentInfo },
    },
    async (_req, res) => {
      res.json({ token: d.tokens.staticToken, serverUrl: d.tokens.agentUrl(), installCommand: d.tokens.installCommand(), package: await d.latestPackage() });
    },
  );

  r.post(
    '/enrollment/tokens',
    {
      summary: 'Create an enrollment token',
      description: 'The token (and the install command with it) is in the answer once. Audited.',
      role: 'admin',
      body: CreateToken,
      responses: { 201: EnrollmentTokenCreated },
    },
    async (req, res) => {
      const body = CreateToken.parse(req.body);
      const { view, token } = await d.tokens.create({ ...body, createdBy: actorOf(req).username });
      await d.audit.record({
        actor: actorOf(req),
        action: 'enrollment_token.create',
        targetType: 'enrollment_token',
        targetId: view.id,
        details: { name: view.name, prefix: view.prefix, ttlSec: body.ttlSec, maxUses: body.maxUses, labels: body.labels },
      });
      res.status(201).json({ ...view, token, installCommand: d.tokens.installCommand(token) });
    },
  );

  r.get(
    '/enrollment/tokens',
    {
      summary: 'List enrollment tokens',
      role: 'admin',
      query: TokenPage,
      responses: { 200: pageOf(EnrollmentTokenView, 'EnrollmentTokenList') },
    },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, TokenPage);
      res.json(await d.tokens.list(limit, offset));
    },
  );

  r.delete('/enrollment/tokens/:id', { summary: 'Revoke an enrollment token', role: 'admin', responses: { 204: null } }, async (req, res) => {
    const id = String(req.params['id']).slice(0, 64);
    const ok = await d.tokens.revoke(id);
    await d.audit.record({ actor: actorOf(req), action: 'enrollment_token.revoke', targetType: 'enrollment_token', targetId: id, ok });
    if (!ok) throw new ApiError('not_found', 'enrollment token not found');
    res.status(204).end();
  });

  return r;
}
