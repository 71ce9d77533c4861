import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import express from 'express';
import { CloseCode } from '../protocol/index.js';
import { AuditLog } from './auth/audit.js';
import { AuthService, SESSION_COOKIE } from './auth/auth-service.js';
import { EnrollmentTokens } from './auth/enrollment.js';
import { enrollmentRoutes } from './auth/enrollment-routes.js';
import { authRoutes } from './auth/routes.js';
import { createCluster } from './cluster/cluster.js';
import { AgentOwnership } from './cluster/ownership.js';
import { selectorLimits, servedOverHttps, type Config } from './config/config.js';
import type { Core } from './core.js';
import { migrateLatest, openDb, setQueryTimeout } from './db/db.js';
import { DbReadiness } from './db/readiness.js';
import { secureDataDir } from './db/data-dir.js';
import { DiskGuard } from './db/disk-guard.js';
import { TxBatcher } from './db/tx-batcher.js';
import { createAgentConfig } from './agent-config/index.js';
import { createDashboard } from './dashboard/index.js';
import { createExec } from './exec/index.js';
import { createFiles } from './files/index.js';
import { createSchedules } from './schedules/index.js';
import { createScripts } from './scripts/index.js';
import { createNotifications } from './notifications/index.js';
import { Fleet } from './fleet/fleet.js';
import { LocalAgentSupervisor } from './fleet/local-agent.js';
import { AgentRepo, ConnectionRepo } from './fleet/registry.js';
import { startSimulatedPresence } from './fleet/bench-presence.js';
import { fleetRoutes } from './fleet/routes.js';
import { MetricsHistory, metricsHistoryRoutes } from './fleet/history.js';
import { FleetViews } from './fleet/views.js';
import type { ApiRouter, RegisteredRoute } from './http/api-router.js';
import { authenticate } from './http/context.js';
import { docsRoutes } from './http/docs.js';
import { walkRoutes } from './http/openapi.js';
import { ApiError, errorHandler } from './http/errors.js';
import { clientAddress, csrfGuard, securityHeaders, setSecurityHeaders } from './http/security.js';
import type { Logger } from './log.js';
import { createMetrics } from './metrics.js';
import { createTerminals } from './terminals/index.js';
import { createUpdates } from './updates/index.js';
import { AgentLink } from './ws/agent-link.js';
import { ConsoleHub } from './ws/console-hub.js';
import { ConsoleLink } from './ws/console-link.js';
import type { AgentHandlers, ConsoleHandlers } from './ws/handlers.js';
import { attachUpgrade } from './ws/upgrade.js';

export interface RunningServer {
  port: number;
  url: string;
  core: Core;
  /** Admin password when this start created the admin user with a random one. */
  generatedAdminPassword?: string;
  /** MUSTER_ENROLL_TOKEN when set (else enrolment tokens are created in Admin → Enrolment). */
  enrollToken: string | null;
  /** Every route the API router really serves (method, path below /api), for the OpenAPI test. */
  apiRoutes: { method: string; path: string }[];
  close(): Promise<void>;
}

/** Composes every capability, runs migrations and listens. */
export async function startServer(config: Config, log: Logger, opts: { webDist?: string; agentScript?: string } = {}): Promise<RunningServer> {
  secureDataDir(config.dataDir);
  // Listen before the slow part of the start (database, migrations, loading the fleet): until the
  // server is ready every request and upgrade gets 503 + Retry-After. After a restart the fleet then
  // waits the time it is told instead of piling up refused connects (each of which would grow its
  // exponential backoff and stretch the time until every agent is back).
  const server = config.tlsCert && config.tlsKey
    ? https.createServer({ cert: fs.readFileSync(config.tlsCert), key: fs.readFileSync(config.tlsKey) })
    : http.createServer();
  const starting = (req: http.IncomingMessage, res: http.ServerResponse) => {
    setSecurityHeaders(req, res, config.publicUrl);
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '2' }).end(JSON.stringify({ error: { code: 'unavailable', message: 'server starting' } }));
  };
  const startingUpgrade = (_req: http.IncomingMessage, socket: import('node:stream').Duplex) => {
    socket.on('error', () => socket.destroy());
    const body = JSON.stringify({ error: { code: 'unavailable', message: 'server starting' } });
    socket.end(`HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\nRetry-After: ${1 + Math.floor(Math.random() * 3)}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  };
  server.on('request', starting);
  server.on('upgrade', startingUpgrade);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A deep accept queue: after a restart the whole fleet reconnects within seconds, and SYNs
    // dropped by a short queue come back only after TCP's 1, 3, 7, 15 s retransmits.
    server.listen({ port: config.port, host: config.host, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After listening, errors are per connection (EMFILE on accept, say): log them, never crash.
  server.on('error', (err) => log.error({ err }, 'server socket error'));
  try {
    return await compose(config, log, opts, server, {
      replaceUpgrade: () => server.off('upgrade', startingUpgrade),
      replaceRequest: () => server.off('request', starting),
    });
  } catch (err) {
    server.close();
    throw err;
  }
}

/** Everything after the early listen: database, services, routes, sockets. */
async function compose(
  config: Config, log: Logger, opts: { webDist?: string; agentScript?: string }, server: http.Server | https.Server,
  early: { replaceUpgrade(): void; replaceRequest(): void },
): Promise<RunningServer> {
  const { db, dialect, describe } = openDb(config.dbUrl, config.dataDir, { connectTimeoutMs: config.dbConnectTimeoutMs, acquireTimeoutMs: config.dbAcquireTimeoutMs });
  log.info({ db: describe }, 'database');
  await migrateLatest(db);
  // After the migrations (which may run long on a large database): every statement is bounded.
  setQueryTimeout(db, config.dbQueryTimeoutMs);
  const readiness = new DbReadiness(db, config.readyTimeoutMs);

  const metrics = createMetrics();
  // MUSTER_NATS_URL: the bus carries events between nodes, leases run timers once in the cluster.
  const cluster = await createCluster(config, log, metrics, db);
  const bus = cluster.bus;
  const audit = new AuditLog(db, { refusalWindowMs: config.auditRefusalWindowSec * 1000, onError: (err) => log.error({ err }, 'could not write an audit record') });
  const auth = new AuthService(db, config.sessionTtlSec, bus, { maxTokensPerUser: config.maxTokensPerUser });
  const agentRepo = new AgentRepo(db);
  const connections = new ConnectionRepo(db);
  const fleet = new Fleet({
    repo: agentRepo, connections, bus, log, metrics, nodeId: config.nodeId, writes: new TxBatcher(db),
    ownership: new AgentOwnership(db, config.nodeId, cluster.peers),
    heartbeatIntervalMs: config.heartbeatIntervalMs, flushMs: config.presenceFlushMs,
  });
  const historyOpts = { points: 60, stepMs: config.metricsHistoryStepMs, maxAgents: config.metricsHistoryAgents };
  const history = new MetricsHistory(historyOpts);
  bus.subscribe('agent.metrics', (p) => {
    for (const i of p.items) history.add(i.agentId, i.metrics, Date.parse(i.lastSeenAt));
  });
  bus.subscribe('agent.removed', (p) => history.remove(p.agentId));

  const admin = await auth.ensureAdmin(config.adminPassword);
  // No implicit shared token: enrolment tokens are created by admins (stored hashed), and the
  // single MUSTER_ENROLL_TOKEN works only when set explicitly.
  const enrollment = new EnrollmentTokens(db, config.enrollToken);

  let port = config.port;
  const scheme = config.tlsCert ? 'https' : 'http';
  const serverUrl = () => config.publicUrl?.replace(/\/$/, '') ?? `${scheme}://127.0.0.1:${port}`;
  // SQLite's WAL can hold megabytes that a checkpoint gives back to a full disk.
  const disk = new DiskGuard({
    dir: config.dataDir, reserveBytes: config.diskReserveBytes, log,
    onLow: dialect === 'sqlite' ? async () => void (await db.raw('PRAGMA wal_checkpoint(TRUNCATE)')) : undefined,
  });
  disk.start();
  const core: Core = { config, db, dialect, log, metrics, bus, leases: cluster.leases, fleet, audit, auth, enrollment, dataDir: config.dataDir, serverUrl, disk };

  const exec = createExec(core);
  // Terminal uploads share the file distribution's transfer manager (one in-flight budget); it is made below.
  const terminals = createTerminals(core, () => files.transfers);
  const updates = createUpdates(core);
  // A script that schedules run cannot be deleted (the closure reads `schedules` at call time).
  const scripts = createScripts(core, exec.service, (scriptId) => schedules.repo.countForScript(scriptId));
  const schedules = createSchedules(core, scripts.service);
  const notifications = createNotifications(core);
  const files = createFiles(core, exec.service);
  const agentConfig = createAgentConfig(core);
  const dashboard = createDashboard(core);

  // A host's policy is its owner's decision, not an operator's: recorded as the agent's own action.
  fleet.onPolicyChange((agentId, policy, previous, ip) => {
    log.info({ agentId, source: policy.source, terminals: policy.terminals, exec: policy.exec, error: policy.error }, 'host policy reported');
    // Throttled per agent: an agent re-sending alternating policies cannot write a row per message.
    audit.throttled(`agent.policy\u0000${agentId}`, {
      actor: { username: `agent:${agentId}`, role: null, ip }, action: 'agent.policy', targetType: 'agent', targetId: agentId,
      ok: policy.source !== 'lockdown',
      details: {
        source: policy.source, path: policy.path, ...(policy.error ? { error: policy.error } : {}), terminals: policy.terminals, exec: policy.exec,
        interpreters: policy.interpreters, runAs: policy.runAs, requireSignedScripts: policy.requireSignedScripts,
        keys: policy.scriptPublicKeys.length, allowedPaths: policy.allowedPaths, first: previous == null,
      },
    }, config.auditPolicyBurst);
  });

  const agentHandlers: AgentHandlers = {
    heartbeat: (ctx, m) => {
      fleet.heartbeat(ctx.agentId, ctx.channel.linkId, m.metrics);
      if (m.seq !== undefined) ctx.channel.send({ type: 'heartbeat.ack', seq: m.seq });
    },
    bye: (ctx, m) => ctx.log.info({ reason: m.reason }, 'agent says bye'),
    error: (ctx, m) => ctx.log.warn({ code: m.code, message: m.message, ref: m.ref }, 'agent reported an error'),
    labels: (ctx, m) => fleet.setReportedLabels(ctx.agentId, m.labels),
    policy: (ctx, m) => fleet.setReportedPolicy(ctx.agentId, m.policy),
    ...exec.agentHandlers,
    ...terminals.agentHandlers,
    ...updates.agentHandlers,
    ...files.agentHandlers,
    // Terminal uploads use file.ack too: the transfer id says whose it is.
    'file.ack': (ctx, m) => (terminals.service.transfers.holds(ctx.agentId, m.transferId)
      ? terminals.service.transfers.ack(ctx.agentId, m)
      : files.agentHandlers['file.ack'](ctx, m)),
    ...agentConfig.agentHandlers,
  };
  const hub = new ConsoleHub(bus);
  const views = new FleetViews({
    fleet, bus, log: log.child({ component: 'fleet-views' }), selectorLimits: selectorLimits(config),
    limits: { perConsole: config.fleetViewsPerConsole, tickMs: config.fleetViewTickMs, resortMs: config.fleetViewResortMs, softBufferBytes: 1 << 20 },
  });
  const consoleHandlers: ConsoleHandlers = {
    ping: (ch, m) => void ch.send({ type: 'pong', ...(m.ref ? { ref: m.ref } : {}) }),
    'fleet.feed': (ch, m) => hub.setFeed(ch, m.metrics),
    ...views.handlers(),
    ...exec.consoleHandlers,
    ...terminals.consoleHandlers,
    ...updates.consoleHandlers,
  };

  const app = express();
  app.disable('x-powered-by');
  // Off unless MUSTER_TRUST_PROXY names the proxies: a forged X-Forwarded-For must not pick the
  // address audit records and rate limits see. Upgrades use the same rule (clientAddress).
  app.set('trust proxy', config.trustProxy);
  const trustFn = app.get('trust proxy fn') as (addr: string, i: number) => boolean;
  const remoteOf = (req: http.IncomingMessage) => clientAddress(req, trustFn);
  app.use(securityHeaders(config.publicUrl));
  app.get('/healthz', (_req, res) => void res.json({ ok: true }));
  // Answers within readyTimeoutMs whatever the database does (a partition must not hang the probe).
  app.get('/readyz', async (_req, res) => {
    const r = await readiness.check();
    if (r.ok) res.json({ ok: true, db: 'up', agentsOnline: fleet.onlineCount() });
    else res.status(503).json({ ok: false, db: 'down', error: r.error });
  });
  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', metrics.registry.contentType);
    res.send(await metrics.registry.metrics());
  });

  const api = express.Router();
  api.use(csrfGuard({
    publicUrl: config.publicUrl, sessionCookie: SESSION_COOKIE,
    // Agent packages are uploaded as the raw body.
    rawBodyRoutes: (req) => req.method === 'POST' && (req.path === '/artifacts' || /^\/files\/[^/]+\/revisions$/.test(req.path) || /^\/terminals\/[^/]+\/upload$/.test(req.path)),
  }));
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
  mount(authRoutes({
    auth, audit, secureCookies: servedOverHttps(config), sessionTtlSec: config.sessionTtlSec, loginRateLimit: config.loginRateLimit, maxTokensPerUser: config.maxTokensPerUser,
    agents: { get: (id) => fleet.get(id), all: () => fleet.agents.values() }, db,
  }));
  mount(metricsHistoryRoutes(history, (id) => fleet.get(id) !== undefined, historyOpts));
  mount(fleetRoutes({ fleet, repo: agentRepo, connections, audit, bus, selectorLimits: selectorLimits(config) }));
  const agentUrl = () => serverUrl().replace(/^http/, 'ws');
  mount(enrollmentRoutes({
    tokens: enrollment, audit, staticToken: config.enrollToken, agentUrl, latestPackage: () => updates.latestPackage(),
    installCommand: (token) => `curl -fsSL ${serverUrl()}/install-agent.sh | sudo bash -s -- --server ${agentUrl()} --token ${token} --url ${serverUrl()}/api/artifacts/latest/download${config.updatePublicKey ? ` --public-key-b64 ${config.updatePublicKey}` : ''}`,
  }));
  // scripts before exec: it takes POST /api/tasks bodies that name a library script.
  for (const cap of [scripts, schedules, exec, terminals, updates, files, notifications, agentConfig, dashboard]) if (cap.routes) mount(cap.routes);
  api.use((_req) => {
    throw new ApiError('not_found', 'no such API endpoint');
  });
  app.use('/api', api);
  const installScript = path.resolve(opts.webDist ?? '.', '..', '..', 'deployment', 'install-agent.sh');
  app.get('/install-agent.sh', (_req, res, next) => {
    if (!fs.existsSync(installScript)) throw new ApiError('not_found', 'install script not available');
    // Says which package `latest` is (or that there is none yet) before anything runs.
    updates.latestPackage().then((pkg) => {
      const note = pkg.version ? `# ${serverUrl()}: latest agent package ${pkg.version} (${pkg.source === 'stable' ? 'marked stable' : 'completed a rollout'})`
        : `# ${serverUrl()}: no agent package to install yet (${pkg.uploaded} uploaded, none marked stable): an admin marks one stable under Updates`;
      res.setHeader('X-Muster-Latest-Version', pkg.version ?? 'none');
      const [shebang, ...rest] = fs.readFileSync(installScript, 'utf8').split('\n');
      res.type('text/x-shellscript').send([shebang, note, ...rest].join('\n'));
    }).catch(next);
  });
  if (opts.webDist && fs.existsSync(path.join(opts.webDist, 'index.html'))) {
    const dist = opts.webDist;
    app.use(express.static(dist, { index: false, maxAge: '1h' }));
    // SPA fallback: any non-API GET serves the console.
    app.get(/^\/(?!api\/|ws\/).*/, (_req, res) => void res.sendFile(path.join(dist, 'index.html')));
  }
  app.use(errorHandler(log));

  let draining = false;
  // Upgrades get 503 until the fleet is loaded (a known agent must never meet an empty registry).
  let accepting = false;
  early.replaceUpgrade();
  const { agentWss, consoleWss } = attachUpgrade(server as http.Server, {
    auth, audit, fleet, log, metrics, enrollment,
    agentMaxPayload: config.agentMaxPayload, consoleMaxPayload: config.consoleMaxPayload, agentConnectRate: config.agentConnectRate,
    anonConnectRate: config.anonConnectRate, anonConnectRatePerAddress: config.anonConnectRatePerAddress,
    publicUrl: config.publicUrl, remoteOf, draining: () => draining || !accepting,
    onAgent: (ws, req, a) => {
      new AgentLink(ws, remoteOf(req), a, {
        fleet, audit, log, metrics, handlers: agentHandlers,
        binary: { termData: terminals.agentTermData, execOutput: exec.execOutput, fileData: terminals.agentFileData },
        heartbeatIntervalMs: config.heartbeatIntervalMs, helloTimeoutMs: config.helloTimeoutMs, maxInvalidMessages: config.maxInvalidMessages,
        messageRate: config.agentMessageRate, messageBurst: config.agentMessageBurst,
        pingIntervalMs: config.agentPingIntervalMs, bulkWriteThreshold: config.bulkWriteThreshold, bulkWindow: config.bulkWindow,
        expected: (agentId, kind, id) => (kind === 'execution' ? exec.service.holds(agentId, id) : kind === 'transfer' ? files.holds(agentId, id) || terminals.service.transfers.holds(agentId, id) : terminals.service.holds(agentId, id)),
      });
    },
    onConsole: (ws, req, principal) => {
      metrics.consoles.inc();
      const link = new ConsoleLink(ws, principal, {
        remoteAddress: remoteOf(req), isStale: (p) => auth.isStale(p),
        recheck: (p) => auth.stillValid(p), recheckIntervalMs: config.socketRecheckSec * 1000,
        log, metrics, handlers: consoleHandlers, binary: { termData: terminals.consoleTermData },
        maxInvalidMessages: config.maxInvalidMessages, softBufferLimit: 1 << 20, hardBufferLimit: 16 << 20, bulkWriteThreshold: config.bulkWriteThreshold,
        bulkWindow: config.bulkWindow,
        messageRate: config.consoleMessageRate, messageBurst: config.consoleMessageBurst,
        auditRateLimited: (l) => void audit.record({
          actor: { username: l.principal.username, role: l.principal.role, ip: l.remoteAddress }, action: 'console.rate_limited',
          ok: false, details: { rate: config.consoleMessageRate, burst: config.consoleMessageBurst },
        }).catch((err: unknown) => log.error({ err }, 'could not audit a console rate limit')),
      });
      hub.add(link);
      link.send({ type: 'ready', user: { id: principal.id, username: principal.username, role: principal.role }, serverTime: Date.now() });
    },
  });

  await fleet.start();
  await cluster.attach(fleet, { repo: agentRepo });
  const stopSimulated = config.benchSimulatedPresence !== undefined
    ? startSimulatedPresence(fleet, { heartbeatIntervalMs: config.heartbeatIntervalMs, flipsPerSec: config.benchSimulatedPresence })
    : undefined;
  if (stopSimulated) log.warn({ agents: fleet.agents.size }, 'MUSTER_BENCH_SIMULATED_PRESENCE is set: agents without a socket are shown online with simulated heartbeats (benchmarks only)');
  for (const cap of [notifications, exec, terminals, updates, files, schedules, agentConfig]) await cap.start?.();

  early.replaceRequest();
  server.on('request', app);
  accepting = true;
  port = (server.address() as AddressInfo).port;

  let local: LocalAgentSupervisor | undefined;
  if (config.localAgent && opts.agentScript) {
    local = new LocalAgentSupervisor({
      agentScript: opts.agentScript, serverUrl: `${scheme === 'https' ? 'wss' : 'ws'}://127.0.0.1:${port}`,
      // Its own single-use, short-lived token, minted only while it has not enrolled yet: `npm
      // start` needs no setup, and no long-lived shared token exists for it.
      token: async () => (await enrollment.create({ name: 'local agent', ttlSec: 600, maxUses: 1, labels: {}, createdBy: 'system', internal: true })).token,
      stateDir: path.join(config.dataDir, 'local-agent'), log: log.child({ component: 'local-agent' }),
    });
    local.start();
  }

  let closing: Promise<void> | null = null;
  const close = () => (closing ??= (async () => {
    // Drain first: agents told to go away must not register again with this process (they would
    // be live after the fleet stopped). The listener stays open until the sockets are gone and
    // answers every upgrade 503 + Retry-After: a refused TCP connect would only push each agent's
    // exponential backoff up while the next process starts, and slow the fleet's return.
    draining = true;
    await local?.stop();
    stopSimulated?.();
    views.stop();
    hub.close(CloseCode.serverShutdown, 'server shutdown');
    for (const cap of [schedules, files, updates, terminals, exec, notifications]) await cap.stop?.().catch((err: unknown) => log.error({ err }, 'capability stop failed'));
    const t0 = Date.now();
    await fleet.stop();
    log.debug({ ms: Date.now() - t0 }, 'shutdown: agent sockets closed and recorded');
    // Close frames went out; give peers a moment to answer, then cut the rest. server.close()
    // waits for every accepted socket (upgraded ones included), so a slow or frozen peer would
    // otherwise hold the shutdown (and the restart of a large fleet) for as long as it likes.
    const deadline = Date.now() + 2000;
    while (agentWss.clients.size + consoleWss.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    log.debug({ ms: Date.now() - t0, left: agentWss.clients.size }, 'shutdown: terminating sockets that did not close');
    for (const ws of [...agentWss.clients, ...consoleWss.clients]) ws.terminate();
    agentWss.close();
    consoleWss.close();
    server.closeAllConnections?.();
    await new Promise<void>((r) => server.close(() => r()));

    await audit.flush();
    await cluster.close();
    disk.stop();
    await db.destroy();
    log.info({ ms: Date.now() - t0 }, 'shutdown complete');
  })());

  return { port, url: serverUrl(), core, generatedAdminPassword: admin.password, enrollToken: config.enrollToken ?? null, apiRoutes: walkRoutes(api), close };
}
