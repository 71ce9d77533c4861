/**
 * Notifications against real local HTTP receivers: signed generic webhooks for failed executions
 * and tasks, rollouts that pause and updates that fail, an agent offline longer than N minutes and
 * back (Slack-compatible payload), a receiver that fails and recovers (retries with backoff, every
 * response code in the delivery log), one that never recovers, admin-only API, audit without
 * secrets, and the migration up and down on SQLite and MariaDB.
 */
import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrations, migrationSource } from '../../migrations/index.js';
import { createTask, waitTask } from '../helpers/exec.js';
import {
  agentId,
  Api,
  cleanup,
  createMysqlDatabase,
  databases,
  startAgent,
  startServer,
  tmpDir,
  waitFor,
  type TestAgent,
  type TestServer,
} from '../helpers/harness.js';

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: any;
}

/** A real HTTP receiver on port 0: records every request; answers `failures` 500s first, then 200. */
async function receiver() {
  const got: Received[] = [];
  const state = { failures: 0, always: false };
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d.toString();
    });
    req.on('end', () => {
      let json: unknown = null;
      try {
        json = JSON.parse(body);
      } catch {
        /* not JSON */
      }
      got.push({ path: req.url ?? '', headers: req.headers, body, json });
      if (state.always || state.failures > 0) {
        state.failures--;
        res.writeHead(500).end('receiver down for maintenance');
      } else res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(srv.address() as { port: number }).port}`;
  return { got, state, url, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

const SECRET = 'a-webhook-secret-0123456789';

describe('notifications', () => {
  let s: TestServer;
  let api: Api;
  let rx: Awaited<ReturnType<typeof receiver>>;
  let a: TestAgent;
  let id: string;

  const deliveries = async (ruleId: string) => (await api.get(`/api/notifications/deliveries?ruleId=${ruleId}`)).body.items as any[];

  beforeAll(async () => {
    rx = await receiver();
    s = await startServer({
      env: { MUSTER_NOTIFY_RETRY_BASE_MS: '100', MUSTER_NOTIFY_SWEEP_MS: '100', MUSTER_NOTIFY_MAX_ATTEMPTS: '4', MUSTER_NOTIFY_TIMEOUT_MS: '3000' },
    });
    api = await Api.login(s.url);
    a = startAgent(s, { name: 'n-1' });
    id = await agentId(a);
    await api.waitAgent(id, 'online');
  });
  afterAll(async () => {
    await cleanup();
    await rx.close();
  });

  it('is admin only, validates rules, never returns or audits the secret', async () => {
    const op = await api.userWithRole('operator');
    expect((await op.get('/api/notifications/rules')).status).toBe(403);
    expect((await op.post('/api/notifications/rules', { name: 'x', events: ['task.failed'], url: rx.url })).status).toBe(403);
    const bad = [
      { name: 'x', events: ['nope'], url: rx.url },
      { name: 'x', events: [], url: rx.url },
      { name: 'x', events: ['task.failed'], url: 'ftp://example.com/' },
      { name: 'x', events: ['task.failed'], url: rx.url, secret: 'short' },
      { name: 'x', events: ['task.failed'], url: rx.url, channel: 'slack', secret: SECRET },
      { name: 'x', events: ['task.failed'], url: rx.url, extra: 1 },
    ];
    for (const b of bad) {
      const r = await api.post('/api/notifications/rules', b);
      expect(r.status, JSON.stringify(b)).toBe(400);
      expect(r.body.error.code).toBe('bad_request');
    }
    const r = await api.post('/api/notifications/rules', {
      name: 'probe',
      events: ['task.failed'],
      url: `${rx.url}/probe?key=hidden`,
      secret: SECRET,
      enabled: false,
    });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ name: 'probe', hasSecret: true, enabled: false, channel: 'webhook' });
    expect(JSON.stringify(r.body)).not.toContain(SECRET);
    expect((await api.post('/api/notifications/rules', { name: 'probe', events: ['task.failed'], url: rx.url })).status).toBe(409);
    expect((await api.get('/api/notifications/rules/nope')).status).toBe(404);
    const audit = JSON.stringify((await api.get('/api/audit?limit=50')).body);
    expect(audit).toContain('notification.rule.create');
    expect(audit).not.toContain(SECRET);
    expect(audit).not.toContain('key=hidden');
    expect((await api.delete(`/api/notifications/rules/${r.body.id}`)).status).toBe(204);
    expect((await api.get('/api/notifications/deliveries?status=bogus')).status).toBe(400);
  });

  it('failed executions and tasks reach a signed webhook; successes send nothing', async () => {
    const rule = (
      await api.post('/api/notifications/rules', { name: 'failures', events: ['execution.failed', 'task.failed'], url: `${rx.url}/hook`, secret: SECRET })
    ).body;
    await waitTask(api, (await createTask(api, { script: 'true', targets: { agentIds: [id] } })).id);
    const t = await createTask(api, { script: 'echo bad; exit 9', targets: { agentIds: [id] } });
    await waitTask(api, t.id);
    const mine = () => rx.got.filter((g) => g.path === '/hook');
    await waitFor(() => mine().length >= 2, 'two notifications');
    const byEvent = Object.fromEntries(mine().map((g) => [g.json.event, g]));
    expect(Object.keys(byEvent).sort()).toEqual(['execution.failed', 'task.failed']);
    const ex = byEvent['execution.failed']!;
    expect(ex.json).toMatchObject({
      rule: { id: rule.id, name: 'failures' },
      data: { agentName: 'n-1', execution: { taskId: t.id, exitCode: 9, status: 'failed' } },
    });
    expect(ex.json.summary).toMatch(/execution on n-1 failed \(exit 9\)/);
    expect(byEvent['task.failed']!.json.data.task).toMatchObject({ id: t.id, status: 'failed' });
    for (const g of mine()) {
      // Receivers verify: HMAC-SHA256(secret, "<timestamp>.<body>") in X-Muster-Signature.
      const want = `sha256=${createHmac('sha256', SECRET).update(`${g.headers['x-muster-timestamp']}.${g.body}`).digest('hex')}`;
      expect(g.headers['x-muster-signature']).toBe(want);
      expect(g.headers['x-muster-event']).toBe(g.json.event);
      expect(g.headers['x-muster-delivery']).toBe(g.json.id);
    }
    const log = await deliveries(rule.id);
    expect(log.map((d) => [d.event, d.status, d.lastCode, d.attempts]).sort()).toEqual([
      ['execution.failed', 'delivered', 200, 1],
      ['task.failed', 'delivered', 200, 1],
    ]);
    await api.patch(`/api/notifications/rules/${rule.id}`, { enabled: false });
  });

  it('a receiver that fails and recovers gets the notice on a retry; each attempt is in the delivery log', async () => {
    const rule = (await api.post('/api/notifications/rules', { name: 'flaky', events: ['task.failed'], url: `${rx.url}/flaky` })).body;
    rx.state.failures = 2;
    const sent = await api.post(`/api/notifications/rules/${rule.id}/test`);
    expect(sent.status).toBe(202);
    const d = await waitFor(async () => (await deliveries(rule.id)).find((x) => x.status !== 'pending'), 'delivered after retries');
    expect(d).toMatchObject({ id: sent.body.deliveryId, event: 'test', status: 'delivered', attempts: 3, lastCode: 200, lastError: null });
    expect(d.log.map((x: any) => x.code)).toEqual([500, 500, 200]);
    expect(d.log[0].error).toBe('HTTP 500: receiver down for maintenance');
    // Backoff: the second wait is longer than the first (100 ms, then 200 ms).
    const t = d.log.map((x: any) => Date.parse(x.at));
    expect(t[2] - t[1]).toBeGreaterThanOrEqual(190);
    expect(rx.got.filter((g) => g.path === '/flaky').map((g) => g.json.id)).toEqual(Array(3).fill(sent.body.deliveryId));
  });

  it('a receiver that never recovers: failed after MUSTER_NOTIFY_MAX_ATTEMPTS; one that is not there: the error is logged', async () => {
    const rule = (await api.post('/api/notifications/rules', { name: 'down', events: ['task.failed'], url: `${rx.url}/down` })).body;
    rx.state.always = true;
    await api.post(`/api/notifications/rules/${rule.id}/test`);
    const d = await waitFor(async () => (await deliveries(rule.id)).find((x) => x.status === 'failed'), 'given up');
    rx.state.always = false;
    expect(d.attempts).toBe(4);
    expect(d.log.map((x: any) => x.code)).toEqual([500, 500, 500, 500]);

    const closed = await receiver();
    await closed.close(); // a port nothing listens on any more
    const gone = (await api.post('/api/notifications/rules', { name: 'gone', events: ['task.failed'], url: `${closed.url}/nothing-listens` })).body;
    await api.post(`/api/notifications/rules/${gone.id}/test`);
    const g = await waitFor(async () => (await deliveries(gone.id)).find((x) => x.status === 'failed'), 'refused');
    expect(g.log[0]).toMatchObject({ code: null, error: 'ECONNREFUSED' });
  });

  it('agent offline longer than N minutes, and back, as a Slack incoming-webhook payload', async () => {
    const rule = (
      await api.post('/api/notifications/rules', {
        name: 'slack-offline',
        channel: 'slack',
        events: ['agent.offline'],
        url: `${rx.url}/slack`,
        offlineMinutes: 0.01,
      })
    ).body;
    const slack = () => rx.got.filter((g) => g.path === '/slack');
    await a.stop();
    await waitFor(() => slack().length >= 1, 'offline notice', 30_000);
    expect(slack()[0]!.json).toEqual({ text: expect.stringMatching(/^\[muster\] agent n-1 offline for \d+ s \(agent shutdown\)$/) });
    a = startAgent(s, { name: 'n-1', stateDir: a.stateDir });
    await api.waitAgent(id, 'online');
    await waitFor(() => slack().length >= 2, 'back notice', 30_000);
    expect(slack()[1]!.json.text).toMatch(/^\[muster\] agent n-1 is back online after \d+ s$/);
    expect(slack()).toHaveLength(2);
    expect((await deliveries(rule.id)).map((d) => d.event).sort()).toEqual(['agent.offline', 'agent.online']);
  });

  it('a failed update and the rollout pausing', async () => {
    const rule = (
      await api.post('/api/notifications/rules', {
        name: 'updates',
        events: ['update.failed', 'rollout.paused', 'rollout.rolled_back'],
        url: `${rx.url}/updates`,
      })
    ).body;
    const upd = startAgent(s, { name: 'n-upd', labels: { grp: 'upd' }, args: ['--install-root', tmpDir('noinstall')] });
    await api.waitAgent(await agentId(upd), 'online');
    const pkgDir = tmpDir('n-pkg');
    fs.writeFileSync(path.join(pkgDir, 'VERSION'), '9.0.0\n');
    const file = path.join(tmpDir('n-pkgout'), 'muster-agent-9.0.0-linux-x64.tar.gz');
    execFileSync('tar', ['-czf', file, '-C', pkgDir, './VERSION']);
    const sig = Buffer.alloc(64, 7).toString('base64');
    const up = await api.req('POST', `/api/artifacts?version=9.0.0&signature=${encodeURIComponent(sig)}`, new Uint8Array(fs.readFileSync(file)), {
      'content-type': 'application/octet-stream',
    });
    expect(up.status).toBe(201);
    const r = await api.post('/api/rollouts', { artifactId: up.body.id, selector: 'labels.grp == "upd"', maxFailures: 0 });
    expect(r.status).toBe(201);
    const got = () => rx.got.filter((g) => g.path === '/updates').map((g) => g.json);
    await waitFor(() => got().length >= 2, 'update notices', 60_000);
    expect(
      got()
        .map((j) => j.event)
        .sort(),
    ).toEqual(['rollout.paused', 'update.failed']);
    expect(got().find((j) => j.event === 'update.failed')).toMatchObject({ data: { rolloutId: r.body.id, version: '9.0.0', agentName: 'n-upd' } });
    expect((await deliveries(rule.id)).every((d) => d.status === 'delivered')).toBe(true);
    await api.post(`/api/rollouts/${r.body.id}/cancel`);
  });
});

describe('notifications across a server restart', () => {
  afterAll(cleanup);

  it('a pending delivery is attempted again by the restarted server', async () => {
    const rx = await receiver();
    try {
      // Long enough backoff that the retry falls after the restart.
      let s = await startServer({ env: { MUSTER_NOTIFY_RETRY_BASE_MS: '3000', MUSTER_NOTIFY_MAX_ATTEMPTS: '5' } });
      let api = await Api.login(s.url);
      const rule = (await api.post('/api/notifications/rules', { name: 'durable', events: ['task.failed'], url: `${rx.url}/durable` })).body;
      rx.state.always = true;
      const sent = (await api.post(`/api/notifications/rules/${rule.id}/test`)).body.deliveryId as string;
      await waitFor(async () => ((await api.get(`/api/notifications/deliveries?ruleId=${rule.id}`)).body.items[0]?.attempts ?? 0) >= 1, 'first attempt');
      await s.stop();
      rx.state.always = false;
      s = await s.restart();
      api = await Api.login(s.url);
      const d = await waitFor(
        async () => (await api.get(`/api/notifications/deliveries?ruleId=${rule.id}`)).body.items.find((x: any) => x.status === 'delivered'),
        'delivered after the restart',
      );
      expect(d).toMatchObject({ id: sent, attempts: 2, lastCode: 200 });
      expect(d.log.map((x: any) => x.code)).toEqual([500, 200]);
    } finally {
      await rx.close();
    }
  });
});

describe.each(await databases())('notification migration (%s)', (db) => {
  it('goes up, down and up again', async () => {
    let k: Knex;
    let drop = async () => {};
    if (db === 'mysql') {
      const m = await createMysqlDatabase();
      drop = m.drop;
      const u = new URL(m.url);
      k = knexFactory({ client: 'mysql2', connection: { host: u.hostname, port: Number(u.port), user: 'root', password: '', database: u.pathname.slice(1) } });
    } else {
      k = knexFactory({ client: 'better-sqlite3', connection: { filename: path.join(tmpDir('nmig'), 'm.db') }, useNullAsDefault: true });
    }
    const mine = '202611301800_create_notification_tables';
    expect(migrations.map(([n]) => n)).toContain(mine);
    try {
      await k.migrate.latest({ migrationSource });
      expect(await k.schema.hasTable('notification_rules')).toBe(true);
      await k('notification_rules').insert({
        id: 'r1',
        name: 'n',
        events: '[]',
        channel: 'webhook',
        url: 'http://x',
        secret: null,
        offline_minutes: 0.5,
        enabled: true,
        created_by: 'a',
        created_at: 1,
        updated_at: 1,
      });
      await k('notification_deliveries').insert({
        id: 'd1',
        rule_id: 'r1',
        event: 'test',
        payload: '{"text":"é 🚀"}',
        status: 'pending',
        attempts: 0,
        log: '[]',
        created_at: 1,
        updated_at: 1,
      });
      expect((await k('notification_deliveries').first()).payload).toBe('{"text":"é 🚀"}');
      expect(Number((await k('notification_rules').first()).offline_minutes)).toBe(0.5);
      await k.migrate.down({ migrationSource, name: mine });
      expect(await k.schema.hasTable('notification_rules')).toBe(false);
      expect(await k.schema.hasTable('notification_deliveries')).toBe(false);
      await k.migrate.latest({ migrationSource });
      expect(await k.schema.hasTable('notification_deliveries')).toBe(true);
    } finally {
      await k.destroy();
      await drop();
    }
  });
});
