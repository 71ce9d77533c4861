import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { DeliveryRef, NotificationDeliveryView, NotificationRuleList, NotificationRuleView, pageOf } from '../../protocol/index.js';
import type { AuditLog } from '../auth/audit.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import { ApiError, notFound } from '../http/errors.js';
import { oneOf, one, pageShape, parseQuery } from '../http/query.js';
import type { Delivery, NotificationRepo, Rule } from './repo.js';
import { EVENTS, type NotificationService } from './service.js';

const Url = z
  .string()
  .max(2048)
  .url()
  .refine((u) => /^https?:\/\//i.test(u), 'must be an http:// or https:// URL');

const RuleBody = z
  .object({
    name: z.string().min(1).max(128),
    events: z.array(z.enum(EVENTS)).min(1).max(EVENTS.length),
    channel: z.enum(['webhook', 'slack']).default('webhook'),
    url: Url,
    /** Webhook HMAC key (write-only). */
    secret: z.string().min(16, 'at least 16 characters').max(256).nullable().optional(),
    offlineMinutes: z
      .number()
      .min(0)
      .max(7 * 24 * 60)
      .default(5),
    enabled: z.boolean().default(true),
  })
  .strict();

const RulePatch = RuleBody.partial().strict();

const DeliveriesQuery = { ruleId: one().optional(), status: oneOf(['pending', 'delivered', 'failed']).optional(), ...pageShape(50, 1000) };

/** A rule as the API shows it: the secret is never returned, only whether there is one. */
function ruleView(r: Rule): NotificationRuleView {
  const { secret, createdAt, updatedAt, ...rest } = r;
  return { ...rest, hasSecret: Boolean(secret), createdAt: new Date(createdAt).toISOString(), updatedAt: new Date(updatedAt).toISOString() };
}

function deliveryView(d: Delivery): NotificationDeliveryView {
  let payload: unknown = d.payload;
  try {
    payload = JSON.parse(d.payload);
  } catch {
    /* stored as sent */
  }
  return {
    id: d.id,
    ruleId: d.ruleId,
    event: d.event,
    status: d.status,
    attempts: d.attempts,
    lastCode: d.lastCode,
    lastError: d.lastError,
    log: d.log.map((a) => ({ ...a, at: new Date(a.at).toISOString() })),
    nextAttemptAt: d.nextAttemptAt === null ? null : new Date(d.nextAttemptAt).toISOString(),
    createdAt: new Date(d.createdAt).toISOString(),
    updatedAt: new Date(d.updatedAt).toISOString(),
    payload,
  };
}

/** Where a URL points, for the audit (the full URL of a Slack webhook is itself a credential). */
const hostOf = (u: string): string => new URL(u).host;

/** /api/notifications/rules and /api/notifications/deliveries (admin only, audited). */
export function notificationRoutes(d: { repo: NotificationRepo; service: NotificationService; audit: AuditLog }): ApiRouter {
  const r = new ApiRouter();

  const load = async (id: string): Promise<Rule> => {
    const rule = await d.repo.rule(id);
    if (!rule) throw notFound('notification rule');
    return rule;
  };

  r.get(
    '/notifications/rules',
    {
      summary: 'List notification rules',
      description: 'With every event a rule can name.',
      role: 'admin',
      responses: { 200: NotificationRuleList },
    },
    async (_req, res) => {
      const items = (await d.repo.rules()).map(ruleView);
      res.json({ items, total: items.length, events: EVENTS });
    },
  );

  r.post(
    '/notifications/rules',
    {
      summary: 'Create a notification rule',
      description: 'A generic webhook (JSON body, HMAC-SHA256 signature with `secret`) or a Slack incoming webhook. Audited.',
      role: 'admin',
      body: RuleBody,
      responses: { 201: NotificationRuleView },
    },
    async (req, res) => {
      const b = RuleBody.parse(req.body);
      if (b.channel === 'slack' && b.secret) throw new ApiError('bad_request', 'a Slack webhook takes no secret (its URL is the credential)');
      if (await d.repo.nameTaken(b.name)) throw new ApiError('conflict', `a rule named ${JSON.stringify(b.name)} exists`);
      const now = Date.now();
      const rule: Rule = { id: randomUUID(), ...b, secret: b.secret ?? null, createdBy: actorOf(req).username, createdAt: now, updatedAt: now };
      await d.repo.insertRule(rule);
      await d.service.reload();
      await d.audit.record({
        actor: actorOf(req),
        action: 'notification.rule.create',
        targetType: 'notification_rule',
        targetId: rule.id,
        details: { name: rule.name, events: rule.events, channel: rule.channel, host: hostOf(rule.url), signed: Boolean(rule.secret) },
      });
      res.status(201).json(ruleView(rule));
    },
  );

  r.get('/notifications/rules/:id', { summary: 'One notification rule', role: 'admin', responses: { 200: NotificationRuleView } }, async (req, res) => {
    res.json(ruleView(await load(String(req.params['id']))));
  });

  r.patch(
    '/notifications/rules/:id',
    {
      summary: 'Change a notification rule',
      description: '`secret: null` removes the secret. Audited.',
      role: 'admin',
      body: RulePatch,
      responses: { 200: NotificationRuleView },
    },
    async (req, res) => {
      const b = RulePatch.parse(req.body);
      const rule = await load(String(req.params['id']));
      if (b.name !== undefined && b.name !== rule.name && (await d.repo.nameTaken(b.name, rule.id)))
        throw new ApiError('conflict', `a rule named ${JSON.stringify(b.name)} exists`);
      const next: Rule = { ...rule, ...b, secret: b.secret === undefined ? rule.secret : b.secret, updatedAt: Date.now() };
      if (next.channel === 'slack' && next.secret) throw new ApiError('bad_request', 'a Slack webhook takes no secret (its URL is the credential)');
      await d.repo.updateRule(next);
      await d.service.reload();
      const changed = Object.keys(b).map((k) => (k === 'secret' ? 'secret' : k));
      await d.audit.record({
        actor: actorOf(req),
        action: 'notification.rule.update',
        targetType: 'notification_rule',
        targetId: rule.id,
        details: { name: next.name, changed, host: hostOf(next.url) },
      });
      res.json(ruleView(next));
    },
  );

  r.delete('/notifications/rules/:id', { summary: 'Delete a notification rule', role: 'admin', responses: { 204: null } }, async (req, res) => {
    const rule = await load(String(req.params['id']));
    await d.repo.deleteRule(rule.id);
    await d.service.reload();
    await d.audit.record({
      actor: actorOf(req),
      action: 'notification.rule.delete',
      targetType: 'notification_rule',
      targetId: rule.id,
      details: { name: rule.name },
    });
    res.status(204).end();
  });

  /** Sends a `test` notice to this rule now (whatever its events); answers the delivery id. */
  r.post(
    '/notifications/rules/:id/test',
    {
      summary: 'Send a test notification',
      description: 'A `test` notice to this rule now, whatever its events; answers the delivery id (see the deliveries).',
      role: 'admin',
      responses: { 202: DeliveryRef },
    },
    async (req, res) => {
      const rule = await load(String(req.params['id']));
      const id = await d.service.send(rule, {
        event: 'test',
        summary: `test notification from ${actorOf(req).username}`,
        data: { requestedBy: actorOf(req).username },
      });
      if (!id) throw new ApiError('rate_limited', 'this rule reached its notifications per minute (MUSTER_NOTIFY_MAX_PER_MINUTE)');
      await d.audit.record({
        actor: actorOf(req),
        action: 'notification.rule.test',
        targetType: 'notification_rule',
        targetId: rule.id,
        details: { name: rule.name, delivery: id },
      });
      res.status(202).json({ deliveryId: id });
    },
  );

  r.get(
    '/notifications/deliveries',
    {
      summary: 'Notification delivery log',
      description: 'Each delivery with its attempts, response codes and errors; newest first.',
      role: 'admin',
      query: DeliveriesQuery,
      responses: { 200: pageOf(NotificationDeliveryView, 'NotificationDeliveryList') },
    },
    async (req, res) => {
      const q = parseQuery(req, DeliveriesQuery);
      const { items, total } = await d.repo.deliveries(q);
      res.json({ items: items.map(deliveryView), total });
    },
  );

  return r;
}
