import path from 'node:path';
import { selectorLimits } from '../config/config.js';
import type { Capability, Core } from '../core.js';
import { RolloutEngine } from './engine.js';
import { updateRoutes } from './routes.js';
import { UpdateRepo } from './repo.js';

/**
 * Agent updates (issue 4): artifacts (uploaded, signed agent packages stored under
 * dataDir/artifacts), rollouts in waves, and the agents' update.status reports.
 */
export function createUpdates(core: Core): Capability<'update.status', never> & {
  /** What `latest` resolves to: the newest stable package, else the newest a rollout completed with. */
  latestPackage(): Promise<{ version: string | null; source: 'stable' | 'rollout' | 'none'; uploaded: number }>;
} {
  const repo = new UpdateRepo(core.db);
  const engine = new RolloutEngine({
    repo,
    fleet: core.fleet,
    commands: core.commands,
    leases: core.leases,
    link: core.nodes.link,
    bus: core.bus,
    log: core.log.child({ component: 'rollouts' }),
    metrics: core.metrics,
    updateTimeoutSec: core.config.updateTimeoutSec,
    retry: { initialMs: core.config.dbRetryInitialMs, maxMs: core.config.dbRetryMaxMs },
    // Relative: the agent resolves it against the server URL it is connected to.
    downloadPath: (artifactId) => `/api/artifacts/${encodeURIComponent(artifactId)}/download`,
  });
  return {
    agentHandlers: {
      'update.status': (ctx, m) =>
        engine
          .report(ctx.agentId, m.rolloutId, m.state, m.reason)
          .catch((err: unknown) => ctx.log.error({ err, rolloutId: m.rolloutId }, 'could not record update status')),
    },
    consoleHandlers: {},
    routes: updateRoutes({
      repo,
      engine,
      fleet: core.fleet,
      audit: core.audit,
      artifactDir: path.join(core.dataDir, 'artifacts'),
      blobs: core.nodes.blobs,
      maxArtifactBytes: core.config.maxArtifactBytes,
      selectorLimits: selectorLimits(core.config),
      enrollTokenValid: async (token) => (await core.enrollment.check(token)) !== null,
    }),
    latestPackage: async () => {
      const l = await repo.latestArtifact();
      return { version: l.artifact?.version ?? null, source: l.source, uploaded: l.uploaded };
    },
    start: () => engine.start(),
    stop: () => engine.stop(),
  };
}
