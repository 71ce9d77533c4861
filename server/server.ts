import path from 'node:path';
import { CloseCode } from '../protocol/index.js';
import type { Config } from './config/config.js';
import { openCore, type Core } from './core.js';
import { secureDataDir } from './db/data-dir.js';
import { createAgentConfig } from './agent-config/index.js';
import { createDashboard } from './dashboard/index.js';
import { createExec } from './exec/index.js';
import { createFiles } from './files/index.js';
import { createFleet } from './fleet/index.js';
import { LocalAgentSupervisor } from './fleet/local-agent.js';
import { createApp } from './http/app.js';
import { listenEarly, type Listener } from './http/listener.js';
import type { Logger } from './log.js';
import { createNotifications } from './notifications/index.js';
import { createSchedules } from './schedules/index.js';
import { createScripts } from './scripts/index.js';
import { createTerminals } from './terminals/index.js';
import { createUpdates } from './updates/index.js';
import { ConsoleHub } from './ws/console-hub.js';
import { attachSockets } from './ws/sockets.js';

export interface RunningServer {
  port: number;
  url: string;
  core: Core;
  /** Admin password when this start created the admin user with a random one. */
  generatedAdminPassword?: string;
  /** MUSTER_ENROLL_TOKEN when set (else enrollment tokens are created in Admin → Enrollment). */
  enrollToken: string | null;
  /** Every route the API router really serves (method, path below /api), for the OpenAPI test. */
  apiRoutes: { method: string; path: string }[];
  close(): Promise<void>;
}

/** How long shutdown waits for peers to answer their close frames before cutting them. */
const CLOSE_GRACE_MS = 2000;

/** The composition root: listens early, opens the shared services, wires every capability, serves. */
export async function startServer(config: Config, log: Logger, opts: { webDist?: string; agentScript?: string } = {}): Promise<RunningServer> {
  secureDataDir(config.dataDir);
  const listener = await listenEarly(config, log);
  try {
    return await compose(config, log, opts, listener);
  } catch (err) {
    await listener.close();
    throw err;
  }
}

async function compose(config: Config, log: Logger, opts: { webDist?: string; agentScript?: string }, listener: Listener): Promise<RunningServer> {
  const opened = await openCore(config, log, listener.serverUrl);
  const { core } = opened;
  const admin = await core.auth.ensureAdmin(config.adminPassword);

  const fleet = createFleet(opened);
  const exec = createExec(core);
  // Terminal uploads share the file distribution's transfer manager (one in-flight budget); it is made below.
  const terminals = createTerminals(core, () => files.transfers);
  const dashboard = createDashboard(core);
  const updates = createUpdates(core);
  // A script that schedules run cannot be deleted (the closure reads `schedules` at call time).
  const scripts = createScripts(core, exec.service, (scriptId) => schedules.repo.countForScript(scriptId));
  const schedules = createSchedules(core, scripts.service);
  const notifications = createNotifications(core);
  // Failed executions are published for its rules even when no console watches their task.
  exec.followFailures(() => notifications.service.rulesFor('execution.failed').length > 0);
  const files = createFiles(core, exec.service);
  const agentConfig = createAgentConfig(core);

  const hub = new ConsoleHub(core.bus);
  // scripts before exec: it takes POST /api/tasks bodies that name a library script.
  const routed = [fleet, scripts, schedules, exec, terminals, updates, files, notifications, agentConfig, dashboard];
  const web = createApp(core, {
    readiness: opened.readiness,
    webDist: opts.webDist,
    routes: routed.flatMap((c) => c.routes ?? []),
    latestPackage: () => updates.latestPackage(),
  });
  listener.upgradesTaken();
  const sockets = attachSockets(listener.server, core, {
    hub,
    remoteOf: web.remoteOf,
    agentHandlers: {
      ...fleet.agentHandlers,
      ...exec.agentHandlers,
      ...terminals.agentHandlers,
      ...updates.agentHandlers,
      ...files.agentHandlers,
      ...agentConfig.agentHandlers,
      // Terminal uploads use file.ack too: the transfer id says whose it is.
      'file.ack': (ctx, m) =>
        terminals.service.transfers.holds(ctx.agentId, m.transferId)
          ? terminals.service.transfers.ack(ctx.agentId, m)
          : files.agentHandlers['file.ack'](ctx, m),
    },
    agentBinary: { termData: terminals.agentTermData, execOutput: exec.execOutput, fileData: terminals.agentFileData },
    consoleHandlers: { ...hub.handlers(), ...fleet.consoleHandlers, ...exec.consoleHandlers, ...terminals.consoleHandlers, ...updates.consoleHandlers },
    consoleBinary: { termData: terminals.consoleTermData },
    expected: (agentId, kind, id) =>
      kind === 'execution'
        ? exec.service.holds(agentId, id)
        : kind === 'transfer'
          ? files.holds(agentId, id) || terminals.service.transfers.holds(agentId, id)
          : terminals.service.holds(agentId, id),
  });

  // The fleet first: upgrades are refused until it is loaded.
  for (const cap of [fleet, notifications, exec, terminals, updates, files, schedules, agentConfig]) await cap.start?.();
  listener.serve(web.app);
  sockets.accept();

  const local =
    config.localAgent && opts.agentScript
      ? new LocalAgentSupervisor({
          agentScript: opts.agentScript,
          serverUrl: `${config.tlsCert ? 'wss' : 'ws'}://127.0.0.1:${listener.port}`,
          token: () => core.enrollment.mintLocal(),
          stateDir: path.join(config.dataDir, 'local-agent'),
          log: log.child({ component: 'local-agent' }),
        })
      : undefined;
  local?.start();

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      // Drain first: agents told to go away must not register again with this process (they would
      // be live after the fleet stopped). The listener stays open until the sockets are gone and
      // answers every upgrade 503 + Retry-After: a refused TCP connect would only push each agent's
      // exponential backoff up while the next process starts, and slow the fleet's return.
      sockets.drain();
      await local?.stop();
      const t0 = Date.now();
      await fleet.stop?.();
      hub.close(CloseCode.serverShutdown, 'server shutdown');
      for (const cap of [schedules, agentConfig, files, updates, terminals, exec, notifications])
        await cap.stop?.().catch((err: unknown) => log.error({ err }, 'capability stop failed'));
      await core.fleet.stop();
      log.debug({ ms: Date.now() - t0 }, 'shutdown: agent sockets closed and recorded');
      await sockets.close(CLOSE_GRACE_MS);
      await listener.close();
      await opened.close();
      log.info({ ms: Date.now() - t0 }, 'shutdown complete');
    })());

  return {
    port: listener.port,
    url: listener.serverUrl(),
    core,
    generatedAdminPassword: admin.password,
    enrollToken: core.enrollment.staticToken,
    apiRoutes: web.apiRoutes(),
    close,
  };
}
