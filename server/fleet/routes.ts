import type { AgentCommands } from '../cluster/agent-commands.js';
import { z } from 'zod';
import { Accepted, AgentConnection, AgentSummary, AgentView, CloseCode, Labels, pageOf } from '../../protocol/index.js';
import type { AuditLog } from '../auth/audit.js';
import type { Bus } from '../bus/bus.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import { ApiError, notFound } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import { compileSelector, DEFAULT_SELECTOR_LIMITS, SelectorError, type SelectorLimits } from '../selectors/selector.js';
import type { Fleet } from './fleet.js';
import { comparator, entryOf, FLEET_SORT_KEYS } from './order.js';
import { agentView, type AgentRecord, type ConnectionRepo, type AgentRepo } from './repo.js';

const AgentsQuery = {
  ...pageShape(100, 50_000),
  status: oneOf(['online', 'offline']).optional(),
  selector: one().optional(),
  sort: oneOf(FLEET_SORT_KEYS).optional(),
  order: oneOf(['asc', 'desc']).optional(),
};

const Patch = z
  .object({
    labels: Labels.nullable().optional(),
    groups: z
      .array(
        z
          .string()
          .min(1)
          .max(64)
          .regex(/^[A-Za-z0-9_.-]+$/),
      )
      .max(64)
      .optional(),
  })
  .strict();

/** Filters the in-memory fleet by `selector` and `status`; a bad selector answers 400 with its position. */
export function selectAgents(fleet: Fleet, selector: string | undefined, status?: string, limits: SelectorLimits = DEFAULT_SELECTOR_LIMITS): AgentRecord[] {
  let pred: (a: AgentRecord) => boolean = () => true;
  if (selector !== undefined && selector.trim() !== '') {
    try {
      pred = compileSelector(selector, limits);
    } catch (err) {
      if (err instanceof SelectorError) {
        throw new ApiError('selector_syntax', err.message, 400, { position: err.position, expected: err.expected });
      }
      throw err;
    }
  }
  const out: AgentRecord[] = [];
  for (const a of fleet.agents.values()) {
    if (status && a.status !== status) continue;
    if (pred(a)) out.push(a);
  }
  return out;
}

/** /api/agents: the fleet, one agent, summary, connections, patch, revoke, restart. */
export function fleetRoutes(deps: {
  fleet: Fleet;
  repo: AgentRepo;
  connections: ConnectionRepo;
  audit: AuditLog;
  bus: Bus;
  selectorLimits: SelectorLimits;
  /** Reaches an agent on whichever node holds its socket (restart). */
  commands: Pick<AgentCommands, 'deliver'>;
}): ApiRouter {
  const { fleet, audit } = deps;
  const r = new ApiRouter();

  r.get(
    '/agents',
    {
      summary: 'List agents',
      description: 'The fleet with live status and last metrics, filtered by a selector (errors name the position) and status.',
      role: 'viewer',
      query: AgentsQuery,
      responses: { 200: pageOf(AgentView, 'AgentList') },
    },
    (req, res) => {
      const { status, selector, limit, offset, sort, order } = parseQuery(req, AgentsQuery);
      const all = selectAgents(fleet, selector, status, deps.selectorLimits);
      // The same order as the console's fleet views (order.ts): keys computed once, then compared.
      const key = sort ?? 'name';
      const entries = all.map((a) => entryOf(a, key));
      entries.sort(comparator(order === 'desc'));
      const page = entries.slice(offset, offset + limit);
      res.json({ items: page.map((e) => agentView(fleet.get(e.id)!)), total: all.length });
    },
  );

  r.get(
    '/agents/summary',
    {
      summary: 'Fleet summary',
      description: 'Counts by status, version and platform, and the latest connection events.',
      role: 'viewer',
      responses: { 200: AgentSummary },
    },
    async (_req, res) => {
      const byStatus: Record<string, number> = { online: 0, offline: 0 };
      const byVersion: Record<string, number> = {};
      const byPlatform: Record<string, number> = {};
      let total = 0;
      for (const a of fleet.agents.values()) {
        if (a.revokedAt != null) continue;
        total++;
        byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
        byVersion[a.version] = (byVersion[a.version] ?? 0) + 1;
        const plat = `${a.platform}/${a.arch}`;
        byPlatform[plat] = (byPlatform[plat] ?? 0) + 1;
      }
      const recentConnections = (await deps.connections.recent(20)).map((c) => ({ ...c, name: fleet.get(c.agentId)?.name ?? null }));
      res.json({ total, byStatus, byVersion, byPlatform, recentConnections });
    },
  );

  r.get('/agents/:id', { summary: 'One agent', role: 'viewer', responses: { 200: AgentView } }, (req, res) => {
    const a = fleet.get(String(req.params['id']));
    if (!a) throw notFound('agent');
    res.json(agentView(a));
  });

  r.get(
    '/agents/:id/connections',
    {
      summary: 'Connection history of an agent',
      description: 'Connected and disconnected at, duration, reason, remote address; newest first.',
      role: 'viewer',
      query: pageShape(),
      responses: { 200: pageOf(AgentConnection, 'AgentConnectionList') },
    },
    async (req, res) => {
      const id = String(req.params['id']);
      if (!fleet.get(id)) throw notFound('agent');
      const { limit, offset } = parseQuery(req, pageShape());
      res.json(await deps.connections.list(id, limit, offset));
    },
  );

  r.patch(
    '/agents/:id',
    {
      summary: "Set an agent's labels and groups",
      description: "`labels` replaces the agent's own labels (null gives them back); audited.",
      role: 'operator',
      body: Patch,
      responses: { 200: AgentView },
    },
    async (req, res) => {
      const id = String(req.params['id']);
      const a = fleet.get(id);
      if (!a) throw notFound('agent');
      const body = Patch.parse(req.body);
      await deps.repo.patch(id, { labelOverrides: body.labels, groups: body.groups });
      if (body.labels !== undefined) a.labelOverrides = body.labels;
      if (body.groups !== undefined) a.groups = body.groups;
      await audit.record({ actor: actorOf(req), action: 'agent.patch', targetType: 'agent', targetId: id, details: body });
      const view = agentView(a);
      deps.bus.publish('agent.changed', { agent: view });
      res.json(view);
    },
  );

  r.delete(
    '/agents/:id',
    {
      summary: 'Revoke an agent',
      description: 'Closes its socket; its credentials no longer work. Audited.',
      role: 'admin',
      responses: { 204: null },
    },
    async (req, res) => {
      const id = String(req.params['id']);
      const a = fleet.get(id);
      if (!a) throw notFound('agent');
      const now = Date.now();
      await deps.repo.revoke(id, now);
      a.revokedAt = now;
      fleet.kick(id, CloseCode.revoked, 'revoked');
      deps.bus.publish('agent.changed', { agent: agentView(a) });
      await audit.record({ actor: actorOf(req), action: 'agent.revoke', targetType: 'agent', targetId: id, details: { name: a.name } });
      res.status(204).end();
    },
  );

  r.post(
    '/agents/:id/restart',
    {
      summary: 'Restart an agent',
      description: 'Asks a connected agent to restart, on whichever server node it is connected to (409 `agent_offline` when it is not connected). Audited.',
      role: 'operator',
      responses: { 202: Accepted },
    },
    async (req, res) => {
      const id = String(req.params['id']);
      const a = fleet.get(id);
      if (!a) throw notFound('agent');
      const sent = await deps.commands.deliver(id, { type: 'restart', reason: `requested by ${actorOf(req).username}` });
      await audit.record({ actor: actorOf(req), action: 'agent.restart', targetType: 'agent', targetId: id, ok: sent });
      if (!sent) throw new ApiError('agent_offline', 'agent is not connected');
      res.status(202).json({ accepted: true });
    },
  );

  return r;
}
