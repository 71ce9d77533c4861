import type { Capability, Core } from '../core.js';
import { selectorLimits } from '../config/config.js';
import { AgentConfigRepo } from './repo.js';
import { agentConfigRoutes } from './routes.js';
import { AgentConfigService, type SettingBounds } from './service.js';

/**
 * Live agent configuration (issue 13): settings per agent or per selector (heartbeat interval, log
 * level, labels, terminal idle timeout, output buffer), pushed to connected agents and acknowledged.
 */
export function createAgentConfig(core: Core): Capability<'config.applied', never> & { service: AgentConfigService } {
  const { config } = core;
  const bounds: SettingBounds = {
    heartbeatIntervalSec: { min: config.agentHeartbeatMinSec, max: config.agentHeartbeatMaxSec },
    terminalIdleTimeoutSec: { min: config.agentTerminalIdleMinSec, max: config.agentTerminalIdleMaxSec },
    execBufferBytes: { min: config.agentExecBufferMinBytes, max: config.agentExecBufferMaxBytes },
  };
  const limits = selectorLimits(config);
  const service = new AgentConfigService({
    repo: new AgentConfigRepo(core.db),
    fleet: core.fleet,
    link: core.nodes.link,
    agentNode: (id) => core.nodes.agentNode(id),
    audit: core.audit,
    log: core.log.child({ component: 'agent-config' }),
    bounds,
    selectorLimits: limits,
  });
  // Connect hooks run once the welcome is written: the configuration may go out at once.
  core.fleet.onConnect((agentId, hello) => service.onConnect(agentId, hello));
  core.fleet.onDisconnect((agentId) => service.onDisconnect(agentId));
  return {
    agentHandlers: { 'config.applied': (ctx, m) => service.onApplied(ctx.agentId, m) },
    consoleHandlers: {},
    routes: agentConfigRoutes(service, core.fleet, bounds, limits),
    service,
    start: () => service.start(),
    stop: async () => service.stop(),
  };
}
