import type { Capability, Core } from '../core.js';
import { selectAgents } from '../fleet/routes.js';
import type { ScriptService } from '../scripts/service.js';
import { ScheduleEngine } from './engine.js';
import { ScheduleRepo } from './repo.js';
import { scheduleRoutes } from './routes.js';
import { ScheduleService } from './service.js';

/**
 * Schedules (issue 13): library scripts run by cron (5 fields, IANA time zone) or interval, on a
 * selector evaluated at each fire; each due time fires at most once (claimed in the database).
 */
export function createSchedules(core: Core, scripts: ScriptService): Capability<never, never> & { repo: ScheduleRepo } {
  const repo = new ScheduleRepo(core.db);
  const { config } = core;
  const service = new ScheduleService({
    repo,
    scripts,
    audit: core.audit,
    minIntervalSec: config.scheduleMinIntervalSec,
    calendarMaxFires: config.scheduleCalendarMaxFires,
    checkSelector: (s) => void selectAgents(core.fleet, s),
  });
  const engine = new ScheduleEngine({
    repo,
    scripts,
    auth: core.auth,
    audit: core.audit,
    log: core.log.child({ component: 'schedules' }),
    nodeId: config.nodeId,
    tickMs: config.scheduleTickMs,
    misfireGraceMs: config.scheduleMisfireGraceSec * 1000,
    leased: () => core.leases.held('schedules'),
  });
  return {
    agentHandlers: {},
    consoleHandlers: {},
    routes: scheduleRoutes(service),
    repo,
    start: () => engine.start(),
    stop: () => engine.stop(),
  };
}
