import { z } from 'zod';
import { AgentConfigOverview, AgentConfigRuleView, AgentConfigStatus, AgentConfigStatusList } from '../../protocol/index.js';
import type { Fleet } from '../fleet/fleet.js';
import { selectAgents } from '../fleet/routes.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import { notFound } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import type { SelectorLimits } from '../selectors/selector.js';
import type { ConfigRule } from './repo.js';
import { PRECEDENCE, type AgentConfigService, type SettingBounds } from './service.js';

function ruleView(r: ConfigRule) {
  return { ...r, createdAt: new Date(r.createdAt).toISOString(), updatedAt: new Date(r.updatedAt).toISOString() };
}

/** /api/agent-config (rules: admins edit, everyone reads) and /api/agents/:id/config. */
export function agentConfigRoutes(svc: AgentConfigService, fleet: Fleet, bounds: SettingBounds, selectorLimits: SelectorLimits): ApiRouter {
  const r = new ApiRouter();
  const target = {
    agentId: z.string().min(1).max(128).nullable().default(null),
    selector: z.string().min(1).max(65_536).nullable().default(null),
  };
  const Create = z
    .object({
      ...target,
      priority: z.number().int().min(-1_000_000).max(1_000_000).default(0),
      description: z.string().max(255).default(''),
      settings: svc.schema,
    })
    .strict();
  const Patch = z
    .object({
      selector: z.string().min(1).max(65_536),
      priority: z.number().int().min(-1_000_000).max(1_000_000),
      description: z.string().max(255),
      settings: svc.schema,
    })
    .partial()
    .strict();

  const AgentsQuery = {
    ...pageShape(100, 50_000),
    selector: one().optional(),
    state: oneOf(['applied', 'pending', 'unsupported', 'default']).optional(),
  };

  r.get(
    '/agent-config',
    {
      summary: 'Live agent configuration: rules, bounds and precedence',
      role: 'viewer',
      responses: { 200: AgentConfigOverview },
    },
    (_req, res) => {
      res.json({ rules: svc.listRules().map(ruleView), bounds, precedence: PRECEDENCE });
    },
  );

  r.post(
    '/agent-config/rules',
    {
      summary: 'Create a configuration rule',
      description: 'For one agent (`agentId`) or a selector; pushed live to the agents it matches. Audited.',
      role: 'admin',
      body: Create,
      responses: { 201: AgentConfigRuleView },
    },
    async (req, res) => {
      const b = Create.parse(req.body);
      res.status(201).json(ruleView(await svc.create(b, actorOf(req))));
    },
  );

  r.get('/agent-config/rules/:id', { summary: 'One configuration rule', role: 'viewer', responses: { 200: AgentConfigRuleView } }, (req, res) => {
    res.json(ruleView(svc.getRule(String(req.params['id']))));
  });

  r.patch(
    '/agent-config/rules/:id',
    {
      summary: 'Change a configuration rule',
      description: 'Pushed live to the agents it matches. Audited.',
      role: 'admin',
      body: Patch,
      responses: { 200: AgentConfigRuleView },
    },
    async (req, res) => {
      res.json(ruleView(await svc.update(String(req.params['id']), Patch.parse(req.body), actorOf(req))));
    },
  );

  r.delete(
    '/agent-config/rules/:id',
    { summary: 'Delete a configuration rule', description: 'Audited.', role: 'admin', responses: { 204: null } },
    async (req, res) => {
      await svc.remove(String(req.params['id']), actorOf(req));
      res.status(204).end();
    },
  );

  /** Applied or pending, per agent (filter by selector and state). */
  r.get(
    '/agent-config/agents',
    {
      summary: 'Applied or pending configuration per agent',
      role: 'viewer',
      query: AgentsQuery,
      responses: { 200: AgentConfigStatusList },
    },
    (req, res) => {
      const { selector, state, limit, offset } = parseQuery(req, AgentsQuery);
      const all = selectAgents(fleet, selector, undefined, selectorLimits)
        .map((a) => svc.status(a))
        .filter((s) => !state || s.state === state)
        .sort((a, b) => a.name.localeCompare(b.name) || a.agentId.localeCompare(b.agentId));
      res.json({ items: all.slice(offset, offset + limit), total: all.length });
    },
  );

  r.get('/agents/:id/config', { summary: 'Configuration state of one agent', role: 'viewer', responses: { 200: AgentConfigStatus } }, (req, res) => {
    const rec = fleet.get(String(req.params['id']));
    if (!rec) throw notFound('agent');
    res.json(svc.status(rec));
  });

  return r;
}
