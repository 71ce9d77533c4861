/**
 * The dashboard's aggregate answers and the readable audit log, with real agents and real
 * executions, on SQLite and MariaDB: the hourly trend counts what really ran (grouped in SQL), the
 * attention lists name an offline agent, a host over the disk threshold and a host whose run
 * failed (with that task); the audit log names actors and targets and filters by them server-side;
 * the password rule is exposed and enforced with its words.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTask, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, databases, startAgent, startServer, type TestServer, type TestAgent } from '../helpers/harness.js';

const dbs = await databases();

describe.each(dbs)('dashboard and audit (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  let okId: string;
  let badId: string;
  let goneId: string;
  let gone: TestAgent;

  beforeAll(async () => {
    // 1%: any real disk is fuller than that, so every online agent is listed under "high disk".
    s = await startServer({ db, env: { MUSTER_DASHBOARD_DISK_PERCENT: '1' } });
    api = await Api.login(s.url);
    okId = await agentId(startAgent(s, { name: 'dash-ok' }));
    badId = await agentId(startAgent(s, { name: 'dash-bad' }));
    gone = startAgent(s, { name: 'dash-gone' });
    goneId = await agentId(gone);
    for (const id of [okId, badId, goneId]) await api.waitAgent(id, 'online');
  });
  afterAll(cleanup);

  it('counts real executions per hour in the trend, by outcome', async () => {
    const before = (await api.get('/api/dashboard/trend')).body;
    expect(before.buckets).toHaveLength(24);
    const sum = (t: any, k: string) => t.buckets.reduce((n: number, b: any) => n + b[k], 0);
    expect(sum(before, 'succeeded') + sum(before, 'failed')).toBe(0);

    const good = await createTask(api, { script: 'echo fine', targets: { agentIds: [okId, badId] } });
    const bad = await createTask(api, { script: 'echo broken >&2; exit 3', targets: { agentIds: [badId] } });
    expect((await waitTask(api, good.id)).status).toBe('succeeded');
    expect((await waitTask(api, bad.id)).status).toBe('failed');

    const t = (await api.get('/api/dashboard/trend?hours=24')).body;
    expect(t.bucketMs).toBe(3_600_000);
    expect(sum(t, 'succeeded')).toBe(2);
    expect(sum(t, 'failed')).toBe(1);
    expect(sum(t, 'cancelled')).toBe(0);
    // Oldest first, one per hour, the last one the current hour.
    const starts = t.buckets.map((b: any) => Date.parse(b.start));
    for (let i = 1; i < starts.length; i++) expect(starts[i] - starts[i - 1]).toBe(3_600_000);
    expect(starts.at(-1)).toBe(Math.floor(Date.now() / 3_600_000) * 3_600_000);
    expect((await api.get('/api/dashboard/trend?hours=3')).body.buckets).toHaveLength(3);
    expect((await api.get('/api/dashboard/trend?hours=x')).status).toBe(400);

    const d = (await api.get('/api/dashboard')).body;
    expect(d.failedWindowHours).toBe(24);
    expect(d.attention.failed.total).toBe(1);
    expect(d.attention.failed.items).toEqual([expect.objectContaining({ agentId: badId, name: 'dash-bad', failures: 1, taskId: bad.id })]);
    expect(d.diskPercent).toBe(1);
    expect(d.attention.disk.items.map((h: any) => h.agentId).sort()).toEqual([okId, badId, goneId].sort());
    expect(d.attention.offline.total).toBe(0);
    expect(d.rollouts).toEqual([]);
    expect(d.distributions).toEqual([]);
  });

  it('lists an agent that went offline, and no longer under high disk', async () => {
    await gone.stop();
    await api.waitAgent(goneId, 'offline');
    const d = (await api.get('/api/dashboard')).body;
    expect(d.attention.offline.total).toBe(1);
    expect(d.attention.offline.items[0]).toMatchObject({ agentId: goneId, name: 'dash-gone' });
    expect(d.attention.disk.items.map((h: any) => h.agentId)).not.toContain(goneId);
    // A viewer reads the dashboard too.
    const viewer = await api.userWithRole('viewer');
    expect((await viewer.get('/api/dashboard')).status).toBe(200);
    expect((await viewer.get('/api/audit')).status).toBe(403);
  });

  it('names actors and targets in the audit log and filters by them on the server', async () => {
    const rules = (await api.get('/api/auth/password-rules')).body;
    expect(rules).toMatchObject({ minLength: 8, maxLength: 1024 });
    const short = await api.post('/api/users', { username: 'dash-carol', password: 'short', role: 'viewer' });
    expect(short.status).toBe(400);
    expect(short.body.error.message).toContain(rules.rule);
    const carol = await api.post('/api/users', { username: 'dash-carol', password: 'long-enough-1', role: 'viewer' });
    expect(carol.status).toBe(201);
    expect((await api.patch(`/api/agents/${okId}`, { labels: { tier: 'gold' } })).status).toBe(200);

    // By target name: the user's row carries its name; the id works as well.
    const byName = (await api.get('/api/audit?target=dash-carol')).body;
    expect(byName.items.map((e: any) => e.action)).toEqual(['user.create']);
    expect(byName.items[0]).toMatchObject({
      targetType: 'user',
      targetId: String(carol.body.id),
      targetName: 'dash-carol',
      actor: 'admin',
      actorName: 'admin',
    });
    expect((await api.get(`/api/audit?target=${carol.body.id}&targetType=user`)).body.total).toBe(1);
    // An agent by its name.
    const patched = (await api.get('/api/audit?target=dash-ok&action=agent.patch')).body;
    expect(patched.total).toBe(1);
    expect(patched.items[0]).toMatchObject({ targetId: okId, targetName: 'dash-ok', details: { labels: { tier: 'gold' } } });
    // A task by its id, named.
    const runs = (await api.get('/api/audit?targetType=task')).body;
    expect(runs.items.length).toBeGreaterThan(0);
    for (const e of runs.items) expect(e.targetName).toBeTruthy();

    // Action prefix, actor, result and time range.
    const users = (await api.get('/api/audit?action=user.*')).body;
    expect(users.total).toBeGreaterThanOrEqual(2);
    for (const e of users.items) expect(e.action.startsWith('user.')).toBe(true);
    expect((await api.get('/api/audit?action=user.')).body.total).toBe(0);
    const mine = (await api.get('/api/audit?actor=admin&limit=200')).body;
    expect(mine.items.length).toBeGreaterThan(0);
    for (const e of mine.items) expect(e.actor).toBe('admin');
    expect((await api.get('/api/audit?actor=nobody-at-all')).body.total).toBe(0);
    const refused = (await api.get('/api/audit?ok=false')).body;
    for (const e of refused.items) expect(e.ok).toBe(false);
    const future = new Date(Date.now() + 3_600_000).toISOString();
    expect((await api.get(`/api/audit?since=${encodeURIComponent(future)}`)).body.total).toBe(0);
    expect((await api.get(`/api/audit?until=${Date.now() + 60_000}&action=user.create`)).body.total).toBeGreaterThanOrEqual(1);
    // Paged.
    const p1 = (await api.get('/api/audit?limit=2')).body;
    const p2 = (await api.get('/api/audit?limit=2&offset=2')).body;
    expect(p1.items).toHaveLength(2);
    expect(p2.items[0].id).toBeLessThan(p1.items[1].id);
    expect(p1.total).toBe(p2.total);
  });
});
