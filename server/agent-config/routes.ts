import { Router } from 'express';
import { z } from 'zod';
import type { Fleet } from '../fleet/fleet.js';
import { selectAgents } from '../fleet/routes.js';
import { actorOf, requireRole } from '../http/context.js';
import { notFound } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import type { SelectorLimits } from '../selectors/selector.js';
import type { ConfigRule } from './repository.js';
import { PRECEDENCE, type AgentConfigService, type SettingBounds } from './service.js';

function ruleView(r: ConfigRule) {
  return { ...r, createdAt: new Date(r.createdAt).toISOString(), updatedAt: new Date(r.updatedAt).toISOString() };
}

/** /api/agent-config (rules: admins edit, everyone reads) and /api/agents/:id/config. */
export function agentConfigRoutes(svc: AgentConfigService, fleet: Fleet, bounds: SettingBounds, selectorLimits: SelectorLimits): Router {
  const r = Router();
  const target = {
    agentId: z.string().min(1).max(128).nullable().default(null),
    selector: z.string().min(1).max(65_536).nullable().default(null),
  };
  const Create = z.object({
    ...target,
    priority: z.number().int().min(-1_000_000).max(1_000_000).default(0),
    description: z.string().max(255).default(''),
    settings: svc.schema,
  }).strict();
  const Patch = z.object({
    selector: z.string().min(1).max(65_536),
    priority: z.number().int().min(-1_000_000).max(1_000_000),
    description: z.string().max(255),
    settings: svc.schema,
  }).partial().strict();

  r.get('/agent-config', requireRole('viewer'), (_req, res) => {
    res.json({ rules: svc.listRules().map(ruleView), bounds, precedence: PRECEDENCE });
  });

  r.post('/agent-config/rules', requireRole('admin'), async (req, res) => {
    const b = Create.parse(req.body);
    res.status(201).json(ruleView(await svc.create(b, actorOf(req))));
  });

  r.get('/agent-config/rules/:id', requireRole('viewer'), (req, res) => {
    res.json(ruleView(svc.getRule(String(req.params['id']))));
  });

  r.patch('/agent-config/rules/:id', requireRole('admin'), async (req, res) => {
    res.json(ruleView(await svc.update(String(req.params['id']), Patch.parse(req.body), actorOf(req))));
  });

  r.delete('/agent-config/rules/:id', requireRole('admin'), async (req, res) => {
    await svc.remove(String(req.params['id']), actorOf(req));
    res.status(204).end();
  });

  /** Applied or pending, per agent (filter by selector and state). */
  r.get('/agent-config/agents', requireRole('viewer'), (req, res) => {
    const { selector, state, limit, offset } = parseQuery(req, {
      ...pageShape(100, 50_000), selector: one().optional(), state: oneOf(['applied', 'pending', 'unsupported', 'default']).optional(),
    });
    const all = selectAgents(fleet, selector, undefined, selectorLimits).map((a) => svc.status(a)).filter((s) => !state || s.state === state)
      .sort((a, b) => a.name.localeCompare(b.name) || a.agentId.localeCompare(b.agentId));
    res.json({ items: all.slice(offset, offset + limit), total: all.length });
  });

  r.get('/agents/:id/config', requireRole('viewer'), (req, res) => {
    const rec = fleet.get(String(req.params['id']));
    if (!rec) throw notFound('agent');
    res.json(svc.status(rec));
  });

  return r;
}
