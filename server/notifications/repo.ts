import type { Db } from '../db/db.js';

export type Channel = 'webhook' | 'slack';
export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface Rule {
  id: string;
  name: string;
  events: string[];
  channel: Channel;
  url: string;
  secret: string | null;
  offlineMinutes: number;
  enabled: boolean;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
}

export interface Attempt {
  at: number;
  code: number | null;
  error: string | null;
  ms: number;
}

export interface Delivery {
  id: string;
  ruleId: string;
  event: string;
  payload: string;
  status: DeliveryStatus;
  attempts: number;
  lastCode: number | null;
  lastError: string | null;
  log: Attempt[];
  nextAttemptAt: number | null;
  createdAt: number;
  updatedAt: number;
}

const ruleFrom = (r: Record<string, unknown>): Rule => ({
  id: String(r['id']),
  name: String(r['name']),
  events: JSON.parse(String(r['events'])) as string[],
  channel: r['channel'] as Channel,
  url: String(r['url']),
  secret: (r['secret'] as string | null) ?? null,
  offlineMinutes: Number(r['offline_minutes']),
  enabled: Boolean(r['enabled']),
  createdBy: String(r['created_by']),
  createdAt: Number(r['created_at']),
  updatedAt: Number(r['updated_at']),
});

const deliveryFrom = (r: Record<string, unknown>): Delivery => ({
  id: String(r['id']),
  ruleId: String(r['rule_id']),
  event: String(r['event']),
  payload: String(r['payload']),
  status: r['status'] as DeliveryStatus,
  attempts: Number(r['attempts']),
  lastCode: r['last_code'] == null ? null : Number(r['last_code']),
  lastError: (r['last_error'] as string | null) ?? null,
  log: JSON.parse(String(r['log'])) as Attempt[],
  nextAttemptAt: r['next_attempt_at'] == null ? null : Number(r['next_attempt_at']),
  createdAt: Number(r['created_at']),
  updatedAt: Number(r['updated_at']),
});

/** notification_rules and notification_deliveries. */
export class NotificationRepo {
  constructor(private readonly db: Db) {}

  async rules(): Promise<Rule[]> {
    return (await this.db('notification_rules').orderBy('name')).map(ruleFrom);
  }

  async rule(id: string): Promise<Rule | null> {
    const r = await this.db('notification_rules').where({ id }).first();
    return r ? ruleFrom(r) : null;
  }

  async insertRule(r: Rule): Promise<void> {
    await this.db('notification_rules').insert({
      id: r.id,
      name: r.name,
      events: JSON.stringify(r.events),
      channel: r.channel,
      url: r.url,
      secret: r.secret,
      offline_minutes: r.offlineMinutes,
      enabled: r.enabled,
      created_by: r.createdBy,
      created_at: r.createdAt,
      updated_at: r.updatedAt,
    });
  }

  async updateRule(r: Rule): Promise<void> {
    await this.db('notification_rules')
      .where({ id: r.id })
      .update({
        name: r.name,
        events: JSON.stringify(r.events),
        channel: r.channel,
        url: r.url,
        secret: r.secret,
        offline_minutes: r.offlineMinutes,
        enabled: r.enabled,
        updated_at: r.updatedAt,
      });
  }

  async deleteRule(id: string): Promise<boolean> {
    return (await this.db('notification_rules').where({ id }).delete()) > 0;
  }

  async nameTaken(name: string, exceptId?: string): Promise<boolean> {
    const q = this.db('notification_rules').where({ name });
    if (exceptId) q.whereNot({ id: exceptId });
    return Boolean(await q.first('id'));
  }

  async insertDelivery(d: Delivery): Promise<void> {
    await this.db('notification_deliveries').insert({
      id: d.id,
      rule_id: d.ruleId,
      event: d.event,
      payload: d.payload,
      status: d.status,
      attempts: d.attempts,
      last_code: d.lastCode,
      last_error: d.lastError,
      log: JSON.stringify(d.log),
      next_attempt_at: d.nextAttemptAt,
      created_at: d.createdAt,
      updated_at: d.updatedAt,
    });
  }

  async updateDelivery(d: Delivery): Promise<void> {
    await this.db('notification_deliveries')
      .where({ id: d.id })
      .update({
        status: d.status,
        attempts: d.attempts,
        last_code: d.lastCode,
        last_error: d.lastError,
        log: JSON.stringify(d.log),
        next_attempt_at: d.nextAttemptAt,
        updated_at: d.updatedAt,
      });
  }

  /** Deliveries still to be attempted (resumed at start). */
  async pending(): Promise<Delivery[]> {
    return (await this.db('notification_deliveries').where({ status: 'pending' }).orderBy('created_at')).map(deliveryFrom);
  }

  async deliveries(f: { ruleId?: string; status?: string; limit: number; offset: number }): Promise<{ items: Delivery[]; total: number }> {
    const q = this.db('notification_deliveries');
    if (f.ruleId) q.where({ rule_id: f.ruleId });
    if (f.status) q.where({ status: f.status });
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(f.limit).offset(f.offset);
    return { items: rows.map(deliveryFrom), total: Number(n) };
  }
}
