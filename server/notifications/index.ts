import type { Capability, Core } from '../core.js';
import { NOTIFIED_EXECUTION_STATES } from '../exec/model.js';
import { NotificationRepo } from './repo.js';
import { notificationRoutes } from './routes.js';
import { NotificationService } from './service.js';

/** Ids already notified, bounded: the oldest are forgotten first. */
class Seen {
  private readonly set = new Set<string>();
  constructor(private readonly max: number) {}
  /** True the first time `id` is seen. */
  first(id: string): boolean {
    if (this.set.has(id)) return false;
    this.set.add(id);
    if (this.set.size > this.max) this.set.delete(this.set.values().next().value!);
    return true;
  }
}

/**
 * Notifications (issue 14): admin-managed rules that send fleet events to webhooks (generic JSON,
 * signed, or Slack incoming-webhook). Listens on the bus; the delivery itself is NotificationService.
 */
export function createNotifications(core: Core): Capability<never, never> & { service: NotificationService } {
  const { config, bus, fleet } = core;
  const log = core.log.child({ component: 'notifications' });
  const repo = new NotificationRepo(core.db);
  const service = new NotificationService(repo, log, core.metrics, {
    maxAttempts: config.notifyMaxAttempts,
    retryBaseMs: config.notifyRetryBaseMs,
    timeoutMs: config.notifyTimeoutMs,
    maxPerMinute: config.notifyMaxPerMinute,
  });
  const unsubs: Array<() => void> = [];
  const executions = new Seen(100_000);
  const tasks = new Seen(10_000);
  /** Agents seen going offline by this process, and since when. */
  const offlineSince = new Map<string, { at: number; reason: string }>();
  /** `${ruleId}:${agentId}` of offline notices sent (the agent's return is then announced to that rule). */
  const offlineNotified = new Set<string>();
  let sweep: NodeJS.Timeout | undefined;

  const agentData = (agentId: string) => {
    const a = fleet.get(agentId);
    return { agentId, agentName: a?.name ?? null, hostname: a?.hostname ?? null, labels: a?.labels ?? {} };
  };

  function sweepOffline(): void {
    // Once in the cluster: every node hears every offline/online event, the lease holder notifies.
    if (!core.leases.held('notifications')) return;
    const now = Date.now();
    const rules = service.rulesFor('agent.offline');
    if (!rules.length) return;
    for (const [agentId, o] of offlineSince) {
      for (const r of rules) {
        const key = `${r.id}:${agentId}`;
        if (offlineNotified.has(key) || now - o.at < r.offlineMinutes * 60_000) continue;
        offlineNotified.add(key);
        const d = agentData(agentId);
        const mins = (now - o.at) / 60_000;
        void service.send(r, {
          event: 'agent.offline',
          summary: `agent ${d.agentName ?? agentId} offline for ${mins < 1 ? `${Math.round(mins * 60)} s` : `${Math.round(mins)} min`} (${o.reason})`,
          data: { ...d, offlineSince: new Date(o.at).toISOString(), reason: o.reason },
        });
      }
    }
  }

  return {
    agentHandlers: {},
    consoleHandlers: {},
    routes: notificationRoutes({ repo, service, audit: core.audit }),
    service,
    async start() {
      await service.start();
      unsubs.push(
        bus.subscribe('agent.offline', (p) => {
          if (p.reason === 'server shutdown') return;
          offlineSince.set(p.agentId, { at: Date.parse(p.at) || Date.now(), reason: p.reason });
        }),
        bus.subscribe('agent.online', (p) => {
          const o = offlineSince.get(p.agent.id);
          offlineSince.delete(p.agent.id);
          if (!o) return;
          for (const r of service.rulesFor('agent.offline')) {
            if (!offlineNotified.delete(`${r.id}:${p.agent.id}`)) continue;
            const secs = Math.round((Date.now() - o.at) / 1000);
            void service.send(r, {
              event: 'agent.online',
              summary: `agent ${p.agent.name} is back online after ${secs} s`,
              data: { ...agentData(p.agent.id), offlineSince: new Date(o.at).toISOString(), offlineSec: secs },
            });
          }
        }),
        bus.subscribe(
          'execution.updated',
          ({ execution: e }) => {
            if (!NOTIFIED_EXECUTION_STATES.includes(e.status)) return;
            if (!service.rulesFor('execution.failed').length || !executions.first(e.id)) return;
            const why = e.exitCode !== null ? `exit ${e.exitCode}` : (e.reason ?? e.status);
            service.notify('execution.failed', {
              event: 'execution.failed',
              summary: `execution on ${e.agentName} ${e.status} (${why}); task ${e.taskId}`,
              data: { execution: e, ...agentData(e.agentId) },
            });
          },
          { localOnly: true },
        ),
        bus.subscribe(
          'task.updated',
          ({ task: t }) => {
            if (t.status !== 'failed' || !service.rulesFor('task.failed').length || !tasks.first(t.id)) return;
            const counts = Object.entries(t.counts)
              .map(([k, v]) => `${v} ${k}`)
              .join(', ');
            service.notify('task.failed', {
              event: 'task.failed',
              summary: `task ${t.id} by ${t.createdBy} failed: ${counts}`,
              data: { task: { ...t, script: undefined } },
            });
          },
          { localOnly: true },
        ),
        bus.subscribe(
          'rollout.event',
          (p) => {
            const data = { rolloutId: p.rolloutId, version: p.version, agentId: p.agentId, agentName: p.agentName, reason: p.reason };
            if (p.event === 'paused') {
              service.notify('rollout.paused', { event: 'rollout.paused', summary: `rollout ${p.rolloutId} to ${p.version} paused: ${p.reason ?? ''}`, data });
            } else if (p.event === 'target.rolled_back') {
              service.notify('rollout.rolled_back', {
                event: 'rollout.rolled_back',
                summary: `agent ${p.agentName} rolled back from ${p.version}: ${p.reason ?? ''}`,
                data,
              });
            } else {
              service.notify('update.failed', { event: 'update.failed', summary: `update of ${p.agentName} to ${p.version} failed: ${p.reason ?? ''}`, data });
            }
            // Events are notified by the node that published them (each is published once in the cluster).
          },
          { localOnly: true },
        ),
      );
      sweep = setInterval(sweepOffline, config.notifySweepMs);
      sweep.unref();
    },
    async stop() {
      clearInterval(sweep);
      for (const u of unsubs) u();
      await service.stop();
    },
  };
}
