import { selectorLimits } from '../config/config.js';
import type { Capability, OpenCore } from '../core.js';
import { startSimulatedPresence } from './bench-presence.js';
import { auditPolicyChanges, fleetAgentHandlers } from './handlers.js';
import { MetricsHistory, metricsHistoryRoutes } from './history.js';
import { fleetRoutes } from './routes.js';
import { FleetViews } from './views.js';

/**
 * Presence as a capability: the fleet's agent messages, the policy audit, the server-side fleet
 * views the console's agents table follows, the metrics history, and the /api/agents routes.
 * `start` loads the fleet (before any agent socket is accepted).
 */
export function createFleet({
  core,
  agentRepo,
  connections,
  cluster,
}: Pick<OpenCore, 'core' | 'agentRepo' | 'connections' | 'cluster'>): Capability<
  'heartbeat' | 'bye' | 'error' | 'labels' | 'policy',
  'fleet.open' | 'fleet.scroll' | 'fleet.close'
> {
  const { config, fleet, bus, log, audit } = core;
  auditPolicyChanges(fleet, audit, log, config.auditPolicyBurst);
  const historyOpts = { points: 60, stepMs: config.metricsHistoryStepMs, maxAgents: config.metricsHistoryAgents };
  const history = new MetricsHistory(historyOpts);
  bus.subscribe('agent.metrics', (p) => {
    for (const i of p.items) history.add(i.agentId, i.metrics, Date.parse(i.lastSeenAt));
  });
  bus.subscribe('agent.removed', (p) => history.remove(p.agentId));
  const views = new FleetViews({
    fleet,
    bus,
    log: log.child({ component: 'fleet-views' }),
    selectorLimits: selectorLimits(config),
    limits: {
      perConsole: config.fleetViewsPerConsole,
      tickMs: config.fleetViewTickMs,
      resortMs: config.fleetViewResortMs,
      softBufferBytes: config.consoleSoftBufferBytes,
    },
  });
  let stopSimulated: (() => void) | undefined;
  return {
    agentHandlers: fleetAgentHandlers(fleet, (s) => core.metrics.heartbeatRtt.observe(s)),
    consoleHandlers: views.handlers(),
    routes: [
      metricsHistoryRoutes(history, (id) => fleet.get(id) !== undefined, historyOpts),
      fleetRoutes({ fleet, repo: agentRepo, connections, audit, bus, selectorLimits: selectorLimits(config), commands: core.commands }),
    ],
    async start() {
      await fleet.start();
      await cluster.attach(fleet, { repo: agentRepo });
      views.prepare();
      if (config.benchSimulatedPresence === undefined) return;
      stopSimulated = startSimulatedPresence(fleet, { heartbeatIntervalMs: config.heartbeatIntervalMs, flipsPerSec: config.benchSimulatedPresence });
      log.warn(
        { agents: fleet.agents.size },
        'MUSTER_BENCH_SIMULATED_PRESENCE is set: agents without a socket are shown online with simulated heartbeats (benchmarks only)',
      );
    },
    async stop() {
      stopSimulated?.();
      views.stop();
    },
  };
}
