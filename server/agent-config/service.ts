import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { AGENT_LOG_LEVELS, Labels, type AgentMessage, type AgentSettings, type Hello } from '../../protocol/index.js';
import type { Actor, AuditLog } from '../auth/audit.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/repo.js';
import { selectAgents } from '../fleet/routes.js';
import { ApiError, notFound } from '../http/errors.js';
import type { Logger } from '../log.js';
import { compileSelector, type AgentPredicate, type SelectorLimits } from '../selectors/selector.js';
import type { AgentConfigRepo, ConfigRule } from './repo.js';

/** Named bounds of the settings (server config `MUSTER_AGENT_*_MIN/MAX_*`). */
export interface SettingBounds {
  heartbeatIntervalSec: { min: number; max: number };
  terminalIdleTimeoutSec: { min: number; max: number };
  execBufferBytes: { min: number; max: number };
}

/** The settings schema with the server's bounds: a value outside them is a 400 naming the key and the bound. */
export function boundedSettings(b: SettingBounds) {
  const within = (k: keyof SettingBounds) =>
    z.number().int().min(b[k].min, `must be at least ${b[k].min} (server bound)`).max(b[k].max, `must be at most ${b[k].max} (server bound)`).optional();
  return z
    .object({
      heartbeatIntervalSec: within('heartbeatIntervalSec'),
      logLevel: z.enum(AGENT_LOG_LEVELS).optional(),
      labels: Labels.optional(),
      terminalIdleTimeoutSec: within('terminalIdleTimeoutSec'),
      execBufferBytes: within('execBufferBytes'),
    })
    .strict();
}

/** What an agent acknowledged (`config.applied`). */
export interface Applied {
  revision: string;
  effective: AgentMessage<'config.applied'>['effective'];
  notes: Record<string, string>;
  at: number;
}

/**
 * Node-addressed kinds (server/cluster/node-link.ts), each broadcast to every other node: the rules
 * changed (reload them from the database and push to the agents connected there); an agent's
 * support for live configuration (`s`) or acknowledgement (`r`), so every node's status is the same.
 */
const RULES = 'agent-config.rules';
const AGENT = 'agent-config.agent';

export const PRECEDENCE =
  'Rules are merged key by key (labels label by label): selector rules in ascending priority (equal priority: older first), ' +
  'then rules for the agent itself in the same order; a later rule overrides an earlier one, so a per-agent rule wins over every selector rule ' +
  'and a higher priority wins among selector rules. The host policy on the agent wins over all of them.';

/** Canonical JSON (sorted keys), so equal settings give equal revisions. */
function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  return `{${Object.keys(v)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
    .join(',')}}`;
}

/**
 * Live agent configuration: rules in the database (cached here), merged per agent, pushed to
 * connected agents that support it (after each welcome and whenever a rule changes), and the
 * agents' acknowledgements (kept in memory: after a server restart every agent reconnects and
 * acknowledges again). Selectors are evaluated when a rule changes and when the agent connects
 * (not when its labels change: a rule that sets labels must not switch itself on and off).
 */
export class AgentConfigService {
  private rules: ConfigRule[] = [];
  private readonly predicates = new Map<string, AgentPredicate>();
  /** Revision last sent on the agent's current connection. */
  private readonly sent = new Map<string, string>();
  /** Last acknowledgement per agent (kept across disconnects). */
  private readonly applied = new Map<string, Applied>();
  /** Whether the agent's last hello listed the `config` capability. */
  private readonly supports = new Map<string, boolean>();
  readonly schema: ReturnType<typeof boundedSettings>;
  private readonly unsubs: (() => void)[] = [];

  constructor(
    private readonly deps: {
      repo: AgentConfigRepo;
      fleet: Fleet;
      /** Other server nodes: each pushes to the agents connected to it (on one node: nobody else). */
      link: NodeLink;
      /** The node holding an agent's socket (null: connected nowhere). */
      agentNode(agentId: string): string | null;
      audit: AuditLog;
      log: Logger;
      bounds: SettingBounds;
      selectorLimits: SelectorLimits;
    },
  ) {
    this.schema = boundedSettings(deps.bounds);
  }

  async start(): Promise<void> {
    const { link, fleet, repo, log } = this.deps;
    this.unsubs.push(
      link.handle(RULES, async () => {
        this.setRules(await repo.all());
        this.pushAll();
      }),
      link.handle(AGENT, (m) => {
        const { a, s, r } = m as { a: string; s?: boolean; r?: Applied };
        if (fleet.isOnline(a)) return; // connected here now: this node knows best
        if (s !== undefined) this.supports.set(a, s);
        if (r) this.applied.set(a, r);
      }),
    );
    this.setRules(await repo.all());
    log.debug('agent config rules loaded');
  }

  stop(): void {
    for (const u of this.unsubs.splice(0)) u();
  }

  /** Every other node reloads the rules and pushes to its agents. */
  private changed(): void {
    this.pushAll();
    this.deps.link.broadcast(RULES, {});
  }

  private setRules(rules: ConfigRule[]): void {
    rules.sort((a, b) => a.priority - b.priority || a.createdAt - b.createdAt || a.id.localeCompare(b.id));
    this.rules = rules;
    this.predicates.clear();
    for (const r of rules) {
      if (r.selector === null) continue;
      try {
        this.predicates.set(r.id, compileSelector(r.selector, this.deps.selectorLimits));
      } catch (err) {
        // Stored before a selector limit was lowered: it matches nothing, and says so.
        this.deps.log.warn({ err, ruleId: r.id }, 'agent config rule selector no longer compiles; it matches no agent');
      }
    }
  }

  listRules(): ConfigRule[] {
    return this.rules;
  }

  getRule(id: string): ConfigRule {
    const r = this.rules.find((x) => x.id === id);
    if (!r) throw notFound('agent config rule');
    return r;
  }

  /** The merged settings for one agent, their revision, and the rules that contributed (in merge order). */
  desired(rec: AgentRecord): { settings: AgentSettings; revision: string; rules: string[] } {
    const matching = [...this.rules.filter((r) => r.selector !== null && this.predicates.get(r.id)?.(rec)), ...this.rules.filter((r) => r.agentId === rec.id)];
    const settings: AgentSettings = {};
    for (const r of matching) {
      const { labels, ...rest } = r.settings;
      Object.assign(settings, rest);
      if (labels) settings.labels = { ...settings.labels, ...labels };
    }
    const revision = createHash('sha256').update(canonical(settings)).digest('hex').slice(0, 16);
    return { settings, revision, rules: matching.map((r) => r.id) };
  }

  /** After a welcome: remember whether the agent can take live configuration, and send it its current one. */
  onConnect(agentId: string, hello: Hello): void {
    const ok = hello.capabilities.includes('config');
    this.supports.set(agentId, ok);
    this.deps.link.broadcast(AGENT, { a: agentId, s: ok });
    this.sent.delete(agentId);
    if (ok) this.push(agentId);
  }

  onDisconnect(agentId: string): void {
    this.sent.delete(agentId);
  }

  /** Sends the agent its desired configuration unless this connection already has that revision. */
  private push(agentId: string): void {
    const rec = this.deps.fleet.get(agentId);
    if (!rec || !this.deps.fleet.isOnline(agentId) || !this.supports.get(agentId)) return;
    const d = this.desired(rec);
    if (this.sent.get(agentId) === d.revision) return;
    // Until the agent acknowledges, its heartbeats may already come at the new, longer interval.
    if (d.settings.heartbeatIntervalSec !== undefined) {
      this.deps.fleet.setHeartbeatInterval(agentId, Math.max(d.settings.heartbeatIntervalSec * 1000, this.deps.fleet.heartbeatIntervalOf(agentId)));
    }
    if (this.deps.fleet.send(agentId, { type: 'config', revision: d.revision, settings: d.settings })) this.sent.set(agentId, d.revision);
  }

  private pushAll(): void {
    for (const rec of this.deps.fleet.agents.values()) this.push(rec.id);
  }

  /** `config.applied` from an agent. */
  onApplied(agentId: string, m: AgentMessage<'config.applied'>): void {
    const applied: Applied = { revision: m.revision, effective: m.effective, notes: m.notes, at: Date.now() };
    this.applied.set(agentId, applied);
    this.deps.link.broadcast(AGENT, { a: agentId, r: applied });
    this.deps.fleet.setHeartbeatInterval(agentId, m.effective.heartbeatIntervalSec !== null ? m.effective.heartbeatIntervalSec * 1000 : null);
    if (Object.keys(m.notes).length)
      this.deps.log.info({ agentId, revision: m.revision, notes: m.notes }, 'agent applied its configuration with host policy limits');
  }

  /** Applied/pending state of one agent. */
  status(rec: AgentRecord) {
    const d = this.desired(rec);
    const a = this.applied.get(rec.id) ?? null;
    const supported = this.supports.get(rec.id) ?? null;
    const state =
      supported === false ? 'unsupported' : a?.revision === d.revision ? 'applied' : !a && Object.keys(d.settings).length === 0 ? 'default' : 'pending';
    return {
      agentId: rec.id,
      name: rec.name,
      online: this.deps.fleet.isOnline(rec.id) || this.deps.agentNode(rec.id) != null,
      supported,
      state,
      revision: d.revision,
      desired: d.settings,
      rules: d.rules,
      applied: a ? { revision: a.revision, effective: a.effective, notes: a.notes, at: new Date(a.at).toISOString() } : null,
    };
  }

  private check(b: { agentId?: string | null; selector?: string | null }): void {
    if (b.agentId != null && !this.deps.fleet.get(b.agentId)) throw notFound('agent');
    if (b.selector != null) selectAgents(this.deps.fleet, b.selector, undefined, this.deps.selectorLimits);
  }

  async create(
    b: { agentId: string | null; selector: string | null; priority: number; description: string; settings: AgentSettings },
    actor: Actor,
  ): Promise<ConfigRule> {
    if ((b.agentId === null) === (b.selector === null)) throw new ApiError('bad_request', 'give exactly one of agentId and selector');
    this.check(b);
    const now = Date.now();
    const rule: ConfigRule = { id: randomUUID(), ...b, createdBy: actor.username, updatedBy: actor.username, createdAt: now, updatedAt: now };
    await this.deps.repo.insert(rule);
    this.setRules([...this.rules, rule]);
    await this.deps.audit.record({ actor, action: 'agent_config.create', targetType: 'agent_config', targetId: rule.id, details: this.auditDetails(rule) });
    this.changed();
    return rule;
  }

  async update(
    id: string,
    patch: Partial<{ selector: string; priority: number; description: string; settings: AgentSettings }>,
    actor: Actor,
  ): Promise<ConfigRule> {
    const cur = this.getRule(id);
    if (patch.selector !== undefined && cur.selector === null) throw new ApiError('bad_request', 'a rule for one agent has no selector');
    this.check(patch);
    const next: ConfigRule = { ...cur, ...patch, updatedBy: actor.username, updatedAt: Date.now() };
    await this.deps.repo.update(next);
    this.setRules(this.rules.map((r) => (r.id === id ? next : r)));
    await this.deps.audit.record({
      actor,
      action: 'agent_config.update',
      targetType: 'agent_config',
      targetId: id,
      details: { ...this.auditDetails(next), changed: Object.keys(patch), before: cur.settings },
    });
    this.changed();
    return next;
  }

  async remove(id: string, actor: Actor): Promise<void> {
    const cur = this.getRule(id);
    await this.deps.repo.remove(id);
    this.setRules(this.rules.filter((r) => r.id !== id));
    await this.deps.audit.record({ actor, action: 'agent_config.delete', targetType: 'agent_config', targetId: id, details: this.auditDetails(cur) });
    this.changed();
  }

  private auditDetails(r: ConfigRule): Record<string, unknown> {
    return { agentId: r.agentId, selector: r.selector, priority: r.priority, settings: r.settings };
  }
}
