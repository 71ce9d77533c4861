import { Dashboard, ExecutionTrend } from '../../protocol/index.js';
import type { Capability, Core } from '../core.js';
import { ApiRouter } from '../http/api-router.js';
import { int, parseQuery } from '../http/query.js';
import { DashboardReadModel } from './read-model.js';

const TrendQuery = {
  hours: int()
    .optional()
    .transform((v) => Math.min(168, Math.max(1, v ?? 24)))
    .describe('hours back from now, 1 to 168 (default 24)'),
};

/** The dashboard: hosts needing attention, work in progress, and the failure trend (read-only, viewer). */
export function createDashboard(core: Core): Capability<never, never> {
  const model = new DashboardReadModel(core.db, () => core.fleet.agents.values(), {
    diskPercent: core.config.dashboardDiskPercent,
    max: core.config.dashboardAttentionMax,
  });
  const r = new ApiRouter();
  r.get(
    '/dashboard',
    {
      summary: 'Dashboard',
      description:
        'Hosts needing attention (offline; online with the disk at least MUSTER_DASHBOARD_DISK_PERCENT full; failed runs in the last 24 h): ' +
        'the first MUSTER_DASHBOARD_ATTENTION_MAX of each and how many in all; rollouts and file distributions in progress with their progress.',
      role: 'viewer',
      responses: { 200: Dashboard },
    },
    async (_req, res) => {
      res.json(await model.dashboard());
    },
  );
  r.get(
    '/dashboard/trend',
    {
      summary: 'Execution outcomes per hour',
      description:
        'Executions that finished in each hour (UTC) of the last `hours`, by outcome (`failed` counts failed, timeout, lost and policy-denied runs); aggregated in the database.',
      role: 'viewer',
      query: TrendQuery,
      responses: { 200: ExecutionTrend },
    },
    async (req, res) => {
      const { hours } = parseQuery(req, TrendQuery);
      res.json(await model.trend(hours));
    },
  );
  return { agentHandlers: {}, consoleHandlers: {}, routes: r };
}
