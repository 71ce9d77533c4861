import { createHmac, randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Delivery, Rule } from './repo.js';
import type { NotificationRepo } from './repo.js';

/** Events a rule can name. `agent.offline` also sends `agent.online` when that agent comes back. */
export const EVENTS = ['agent.offline', 'execution.failed', 'task.failed', 'rollout.paused', 'rollout.rolled_back', 'update.failed'] as const;
export type EventName = (typeof EVENTS)[number] | 'agent.online' | 'test';

/** Longest retry delay, whatever the attempt count. */
const MAX_DELAY_MS = 10 * 60_000;
/** Response body bytes kept in an error message (the log shows what the receiver said). */
const ERROR_BODY = 200;

export interface NotifyOptions {
  maxAttempts: number;
  retryBaseMs: number;
  timeoutMs: number;
  maxPerMinute: number;
}

/** What a notification says: a one-line summary for people (Slack) and the data for programs. */
export interface Notice {
  event: EventName;
  summary: string;
  data: Record<string, unknown>;
}

/**
 * Delivers notices to the rules that ask for them: one delivery row per (rule, notice), attempted
 * at once and retried with exponential backoff until a 2xx or `maxAttempts`; every attempt's
 * status code or error is kept in the row's log. Webhook bodies are signed with the rule's secret
 * (HMAC-SHA256 over `timestamp.body`). Pending deliveries survive a restart (resumed at start).
 */
export class NotificationService {
  private rules: Rule[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly perMinute = new Map<string, { minute: number; n: number }>();
  private stopped = false;

  constructor(
    private readonly repo: NotificationRepo,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly o: NotifyOptions,
  ) {}

  async start(): Promise<void> {
    await this.reload();
    for (const d of await this.repo.pending()) this.schedule(d, Math.max(0, (d.nextAttemptAt ?? 0) - Date.now()));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.allSettled([...this.inflight]);
  }

  /** Re-reads the rules (after a change through the API). */
  async reload(): Promise<void> {
    this.rules = await this.repo.rules();
  }

  /** Enabled rules that name `event`. */
  rulesFor(event: (typeof EVENTS)[number]): Rule[] {
    return this.rules.filter((r) => r.enabled && r.events.includes(event));
  }

  /** Sends `notice` to every rule that names `event` (its trigger). */
  notify(trigger: (typeof EVENTS)[number], notice: Notice): void {
    for (const r of this.rulesFor(trigger)) void this.send(r, notice);
  }

  /** Creates the delivery for one rule and attempts it now. Resolves with the delivery id (null: dropped by the rate limit). */
  async send(rule: Rule, notice: Notice): Promise<string | null> {
    if (this.stopped) return null;
    const minute = Math.floor(Date.now() / 60_000);
    const c = this.perMinute.get(rule.id);
    if (c && c.minute === minute && c.n >= this.o.maxPerMinute) {
      this.metrics.notificationsDropped.inc();
      if (c.n === this.o.maxPerMinute)
        this.log.warn({ rule: rule.name, limit: this.o.maxPerMinute }, 'notification rate limit reached; dropping until the next minute');
      c.n++;
      return null;
    }
    if (c && c.minute === minute) c.n++;
    else this.perMinute.set(rule.id, { minute, n: 1 });
    const now = Date.now();
    const id = randomUUID();
    const payload =
      rule.channel === 'slack'
        ? { text: `[muster] ${notice.summary}` }
        : { id, event: notice.event, at: new Date(now).toISOString(), rule: { id: rule.id, name: rule.name }, summary: notice.summary, data: notice.data };
    const d: Delivery = {
      id,
      ruleId: rule.id,
      event: notice.event,
      payload: JSON.stringify(payload),
      status: 'pending',
      attempts: 0,
      lastCode: null,
      lastError: null,
      log: [],
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
    };
    try {
      await this.repo.insertDelivery(d);
    } catch (err) {
      this.log.error({ err, rule: rule.name, event: notice.event }, 'could not store a notification');
      return null;
    }
    this.schedule(d, 0);
    return id;
  }

  private schedule(d: Delivery, delayMs: number): void {
    if (this.stopped) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      const p = this.attempt(d).catch((err: unknown) => this.log.error({ err, delivery: d.id }, 'notification attempt failed'));
      this.inflight.add(p);
      void p.finally(() => this.inflight.delete(p));
    }, delayMs);
    t.unref();
    this.timers.add(t);
  }

  private async attempt(d: Delivery): Promise<void> {
    // The rule may have changed (new URL or secret) or gone since the delivery was queued.
    const rule = this.rules.find((r) => r.id === d.ruleId) ?? (await this.repo.rule(d.ruleId));
    if (!rule) return;
    const started = Date.now();
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'muster-notifications' };
    if (rule.channel === 'webhook') {
      const ts = String(Math.floor(started / 1000));
      headers['x-muster-event'] = d.event;
      headers['x-muster-delivery'] = d.id;
      headers['x-muster-timestamp'] = ts;
      if (rule.secret) headers['x-muster-signature'] = `sha256=${createHmac('sha256', rule.secret).update(`${ts}.${d.payload}`).digest('hex')}`;
    }
    let code: number | null = null;
    let error: string | null = null;
    try {
      const res = await fetch(rule.url, { method: 'POST', headers, body: d.payload, redirect: 'manual', signal: AbortSignal.timeout(this.o.timeoutMs) });
      code = res.status;
      const text = await res.text().catch(() => '');
      if (code < 200 || code >= 300) error = `HTTP ${code}${text ? `: ${text.slice(0, ERROR_BODY)}` : ''}`;
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      error = e.name === 'TimeoutError' ? `no answer within ${this.o.timeoutMs} ms` : (e.cause?.code ?? e.cause?.message ?? e.message);
    }
    const now = Date.now();
    d.attempts++;
    d.lastCode = code;
    d.lastError = error;
    d.log.push({ at: now, code, error, ms: now - started });
    d.updatedAt = now;
    if (error === null) {
      d.status = 'delivered';
      d.nextAttemptAt = null;
      this.metrics.notifications.inc({ channel: rule.channel, result: 'delivered' });
    } else if (d.attempts >= this.o.maxAttempts) {
      d.status = 'failed';
      d.nextAttemptAt = null;
      this.metrics.notifications.inc({ channel: rule.channel, result: 'failed' });
      this.log.warn({ rule: rule.name, event: d.event, delivery: d.id, attempts: d.attempts, error }, 'notification gave up');
    } else {
      const delay = Math.min(MAX_DELAY_MS, this.o.retryBaseMs * 2 ** (d.attempts - 1));
      d.nextAttemptAt = now + delay;
      this.metrics.notifications.inc({ channel: rule.channel, result: 'retry' });
    }
    await this.repo.updateDelivery(d);
    if (d.status === 'pending') this.schedule(d, d.nextAttemptAt! - Date.now());
  }
}
