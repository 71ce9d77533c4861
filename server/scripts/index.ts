import type { Capability, Core } from '../core.js';
import type { ExecService } from '../exec/service.js';
import { ScriptRepo } from './repo.js';
import { scriptRoutes } from './routes.js';
import { ScriptService } from './service.js';

/**
 * Script library (issue 13): saved, versioned, parameterised scripts, run as tasks through exec.
 * `inUse` tells how many schedules run a script (a script in use cannot be deleted).
 */
export function createScripts(
  core: Core,
  exec: ExecService,
  inUse: (scriptId: string) => Promise<number> = async () => 0,
): Capability<never, never> & { service: ScriptService } {
  const service = new ScriptService({ repo: new ScriptRepo(core.db), exec, audit: core.audit, maxScriptBytes: core.config.maxScriptBytes });
  return { agentHandlers: {}, consoleHandlers: {}, routes: scriptRoutes(service, inUse), service };
}
