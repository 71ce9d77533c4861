import type { AuditLog } from '../auth/audit.js';
import type { Logger } from '../log.js';
import type { AgentHandlers } from '../ws/handlers.js';
import type { Fleet } from './fleet.js';

/**
 * The fleet's own agent messages: presence (heartbeat), what the host reports, and its farewell.
 * `rtt`: a heartbeat's round trip as its agent measured it (seconds), for the RTT metric.
 */
export function fleetAgentHandlers(fleet: Fleet, rtt: (seconds: number) => void): Pick<AgentHandlers, 'heartbeat' | 'bye' | 'error' | 'labels' | 'policy'> {
  return {
    heartbeat: (ctx, m) => {
      fleet.heartbeat(ctx.agentId, ctx.channel.linkId, m.metrics);
      if (m.seq !== undefined) ctx.channel.send({ type: 'heartbeat.ack', seq: m.seq });
      if (m.rttMs !== undefined) rtt(m.rttMs / 1000);
    },
    bye: (ctx, m) => ctx.log.info({ reason: m.reason }, 'agent says bye'),
    error: (ctx, m) => ctx.log.warn({ code: m.code, message: m.message, ref: m.ref }, 'agent reported an error'),
    labels: (ctx, m) => fleet.setReportedLabels(ctx.agentId, m.labels),
    policy: (ctx, m) => fleet.setReportedPolicy(ctx.agentId, m.policy),
  };
}

/**
 * Audits every host policy an agent reports that differs from the stored one. A host's policy is
 * its owner's decision, not an operator's: recorded as the agent's own action, throttled per agent
 * (`burst` at once per window, MUSTER_AUDIT_POLICY_BURST) so alternating policies cannot write a
 * row per message.
 */
export function auditPolicyChanges(fleet: Fleet, audit: AuditLog, log: Logger, burst: number): void {
  fleet.onPolicyChange((agentId, policy, previous, ip) => {
    log.info({ agentId, source: policy.source, terminals: policy.terminals, exec: policy.exec, error: policy.error }, 'host policy reported');
    audit.throttled(
      `agent.policy\u0000${agentId}`,
      {
        actor: { username: `agent:${agentId}`, role: null, ip },
        action: 'agent.policy',
        targetType: 'agent',
        targetId: agentId,
        ok: policy.source !== 'lockdown',
        details: {
          source: policy.source,
          path: policy.path,
          ...(policy.error ? { error: policy.error } : {}),
          terminals: policy.terminals,
          exec: policy.exec,
          interpreters: policy.interpreters,
          runAs: policy.runAs,
          requireSignedScripts: policy.requireSignedScripts,
          keys: policy.scriptPublicKeys.length,
          allowedPaths: policy.allowedPaths,
          first: previous == null,
        },
      },
      burst,
    );
  });
}
