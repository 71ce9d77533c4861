import type { Config } from './config/config.js';
import { openCore } from './core.js';
import { secureDataDir } from './db/data-dir.js';
import { createAgentConfig } from './agent-config/index.js';
import { createDashboard } from './dashboard/index.js';
import { createExec } from './exec/index.js';
import { createFiles } from './files/index.js';
import { createFleet } from './fleet/index.js';
import { LocalAgentSupervisor } from './fleet/local-agent.js';
import { createApp } from './http/app.js';
import { listenEarly, type Listener } from './http/listener.js';
import { run, type RunningServer } from './lifecycle.js';
import type { Logger } from './log.js';
import { createNotifications } from './notifications/index.js';
import { createSchedules } from './schedules/index.js';
import { createScripts } from './scripts/index.js';
import { createTerminals } from './terminals/index.js';
import { createUpdates } from './updates/index.js';
import { ConsoleHub } from './ws/console-hub.js';
import { attachSockets } from './ws/sockets.js';

/** The console's built files, and the agent the local agent runs (main.ts gives both; tests often neither). */
type StartOptions = { webDist?: string; agentScript?: string };

/** The composition root: listens early, opens the shared services, wires every capability, serves. */
export async function startServer(config: Config, log: Logger, opts: StartOptions = {}): Promise<RunningServer> {
  secureDataDir(config.dataDir);
  const listener = await listenEarly(config, log);
  try {
    return await compose(config, log, opts, listener);
  } catch (err) {
    await listener.close();
    throw err;
  }
}

async function compose(config: Config, log: Logger, opts: StartOptions, listener: Listener): Promise<RunningServer> {
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

  const localAgent = LocalAgentSupervisor.forServer(config, { agentScript: opts.agentScript, port: listener.port, enrollment: core.enrollment, log });
  // Started in this order after the fleet (upgrades are refused until it is loaded), stopped in the reverse one after it.
  const capabilities = [notifications, exec, terminals, updates, files, agentConfig, schedules];
  return run({ log, listener, opened, web, sockets, hub, fleet, capabilities, localAgent, generatedAdminPassword: admin.password });
}
