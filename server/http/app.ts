import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import express from 'express';
import { SESSION_COOKIE } from '../auth/auth-service.js';
import { enrollmentRoutes } from '../auth/enrollment-routes.js';
import { authRoutes } from '../auth/routes.js';
import { servedOverHttps } from '../config/config.js';
import type { Core } from '../core.js';
import type { DbReadiness } from '../db/readiness.js';
import type { ApiRouter, RegisteredRoute } from './api-router.js';
import { authenticate } from './context.js';
import { docsRoutes } from './docs.js';
import { ApiError, errorHandler } from './errors.js';
import { healthRoutes } from './health.js';
import { walkRoutes } from './openapi.js';
import { clientAddress, csrfGuard, securityHeaders } from './security.js';
import { consoleStatic } from './static.js';

export interface App {
  app: express.Express;
  /** Client address of a request or upgrade (X-Forwarded-For only from MUSTER_TRUST_PROXY peers). */
  remoteOf(req: http.IncomingMessage): string | null;
  /** Every route the API router really serves (method, path below /api), for the OpenAPI test. */
  apiRoutes(): { method: string; path: string }[];
}

/**
 * The HTTP side: probes, /api (CSRF guard, JSON bodies, authentication, the documented routes of
 * every capability in the order given), the agent install script and the built console.
 */
export function createApp(
  core: Core,
  o: {
    readiness: DbReadiness;
    routes: readonly ApiRouter[];
    webDist?: string | undefined;
    /** The package `latest` resolves to (told by the enrollment page and the install script). */
    latestPackage: Parameters<typeof enrollmentRoutes>[0]['latestPackage'];
  },
): App {
  const { config, auth, audit } = core;
  const app = express();
  app.disable('x-powered-by');
  // Off unless MUSTER_TRUST_PROXY names the proxies: a forged X-Forwarded-For must not pick the
  // address audit records and rate limits see. Upgrades use the same rule (clientAddress).
  app.set('trust proxy', config.trustProxy);
  const trustFn = app.get('trust proxy fn') as (addr: string, i: number) => boolean;
  app.use(securityHeaders(config.publicUrl));
  app.use(healthRoutes({ readiness: o.readiness, metrics: core.metrics, onlineAgents: () => core.fleet.onlineCount() }));

  const api = express.Router();
  api.use(
    csrfGuard({
      publicUrl: config.publicUrl,
      sessionCookie: SESSION_COOKIE,
      // Agent packages, file revisions and terminal uploads are the raw body.
      rawBodyRoutes: (req) =>
        req.method === 'POST' && (req.path === '/artifacts' || /^\/files\/[^/]+\/revisions$/.test(req.path) || /^\/terminals\/[^/]+\/upload$/.test(req.path)),
    }),
  );
  api.use(express.json({ limit: config.jsonBodyLimit }));
  api.use(authenticate(auth));
  // Every route is declared on an ApiRouter with its Operation: the OpenAPI document is made from them.
  const documented: RegisteredRoute[] = [];
  const mount = (r: ApiRouter) => {
    api.use(r.router);
    documented.push(...r.routes);
  };
  const docs = docsRoutes(() => documented);
  mount(docs.api);
  api.use('/docs', docs.assets);
  mount(
    authRoutes({
      auth,
      audit,
      secureCookies: servedOverHttps(config),
      sessionTtlSec: config.sessionTtlSec,
      loginRateLimit: config.loginRateLimit,
      loginRateMaxKeys: config.loginRateMaxKeys,
      maxTokensPerUser: config.maxTokensPerUser,
      agents: { get: (id) => core.fleet.get(id), all: () => core.fleet.agents.values() },
      db: core.db,
    }),
  );
  mount(enrollmentRoutes({ tokens: core.enrollment, audit, latestPackage: o.latestPackage }));
  for (const r of o.routes) mount(r);
  api.use((_req) => {
    throw new ApiError('not_found', 'no such API endpoint');
  });
  app.use('/api', api);

  const installScript = path.resolve(o.webDist ?? '.', '..', '..', 'deployment', 'install-agent.sh');
  app.get('/install-agent.sh', (_req, res, next) => {
    if (!fs.existsSync(installScript)) throw new ApiError('not_found', 'install script not available');
    // Says which package `latest` is (or that there is none yet) before anything runs.
    o.latestPackage()
      .then((pkg) => {
        const note = pkg.version
          ? `# ${core.serverUrl()}: latest agent package ${pkg.version} (${pkg.source === 'stable' ? 'marked stable' : 'completed a rollout'})`
          : `# ${core.serverUrl()}: no agent package to install yet (${pkg.uploaded} uploaded, none marked stable): an admin marks one stable under Updates`;
        res.setHeader('X-Muster-Latest-Version', pkg.version ?? 'none');
        const [shebang, ...rest] = fs.readFileSync(installScript, 'utf8').split('\n');
        res.type('text/x-shellscript').send([shebang, note, ...rest].join('\n'));
      })
      .catch(next);
  });
  if (o.webDist && fs.existsSync(path.join(o.webDist, 'index.html'))) {
    app.use(consoleStatic(o.webDist));
  }
  app.use(errorHandler(core.log));
  return { app, remoteOf: (req) => clientAddress(req, trustFn), apiRoutes: () => walkRoutes(api) };
}
