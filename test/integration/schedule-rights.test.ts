/**
 * A schedule's authority and secrets at fire time, on a real server and agent: stored secret
 * values stay secret when the script (followed at its latest version) retypes the parameter; and
 * a schedule stops running once its creator is demoted below operator or disabled.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, databases, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';

const dbs = await databases();
const ENV = { MUSTER_SCHEDULE_MIN_INTERVAL_SEC: '1', MUSTER_SCHEDULE_TICK_MS: '200', MUSTER_SCHEDULE_MISFIRE_GRACE_SEC: '5' };
const SECRET = 'zq-s3cr3t-7781';

describe.each(dbs)('schedule rights and secrets at fire time (%s)', (db) => {
  let s: TestServer;
  let api: Api;

  beforeAll(async () => {
    s = await startServer({ db, env: ENV });
    api = await Api.login(s.url);
    const a = startAgent(s, { name: 'rights-1' });
    await api.waitAgent(await agentId(a), 'online');
  });
  afterAll(cleanup);

  const fires = async (id: string) => (await api.get(`/api/schedules/${id}/history?limit=1000`)).body.items as any[];

  it('a stored secret stays secret after the latest version retypes its parameter as a string', async () => {
    const op = await api.userWithRole('operator', 'sec-op');
    const sc = await op.post('/api/scripts', {
      name: 'tok',
      body: 'echo "len=${#MUSTER_PARAM_TOKEN}"',
      params: [{ name: 'token', type: 'secret', required: true }],
    });
    expect(sc.status).toBe(201);
    const r = await op.post('/api/schedules', {
      name: 'tok-1s',
      scriptId: sc.body.id,
      params: { token: SECRET },
      selector: 'rights-1',
      intervalSec: 1,
      overlap: 'allow',
    });
    expect(r.status).toBe(201);
    await waitFor(async () => (await fires(r.body.id)).some((f) => f.status === 'started'), 'a fire of version 1', 60_000);
    // The owner retypes TOKEN from secret to string: the schedule follows the latest version.
    const v2 = await op.req('PUT', `/api/scripts/${sc.body.id}`, { params: [{ name: 'token', type: 'string', required: true }] });
    expect(v2.status).toBe(200);
    const fire = await waitFor(
      async () => (await fires(r.body.id)).find((f) => f.status === 'started' && f.scriptVersion === 2),
      'a fire of version 2',
      60_000,
    );
    expect((await op.req('PATCH', `/api/schedules/${r.body.id}`, { enabled: false })).status).toBe(200);
    const done = await waitTask(api, fire.taskId, 60_000);
    expect(done.status).toBe('succeeded');
    const viewer = await api.userWithRole('viewer');
    const task = await viewer.get(`/api/tasks/${fire.taskId}`);
    expect(task.status).toBe(200);
    expect(task.body.secretEnv).toEqual(['MUSTER_PARAM_TOKEN']);
    expect(JSON.stringify(task.body)).not.toContain(SECRET);
    const audit = await api.get('/api/audit?action=script.run&limit=200');
    expect(audit.body.items.length).toBeGreaterThan(0);
    expect(JSON.stringify(audit.body)).not.toContain(SECRET);
  });

  it('stops firing once the creator is demoted below operator, and when disabled; each refused fire is failed and audited', async () => {
    const op = await api.userWithRole('operator', 'rights-op');
    const userId = (await api.get('/api/users')).body.items.find((u: any) => u.username === 'rights-op').id;
    const sc = await op.post('/api/scripts', { name: 'noop', body: 'true' });
    expect(sc.status).toBe(201);
    const r = await op.post('/api/schedules', { name: 'noop-1s', scriptId: sc.body.id, selector: 'rights-1', intervalSec: 1, overlap: 'allow' });
    expect(r.status).toBe(201);
    const id = r.body.id as string;
    await waitFor(async () => (await fires(id)).some((f) => f.status === 'started'), 'a first fire', 60_000);

    const refusedAfter = async (re: RegExp) => {
      // Fires already claimed when the rights changed may still start; after a refused fire none may.
      const first = await waitFor(
        async () => (await fires(id)).find((f) => f.status === 'failed' && re.test(f.reason ?? '')),
        `a fire refused (${re})`,
        60_000,
      );
      await waitFor(async () => (await fires(id)).filter((f) => Date.parse(f.dueAt) > Date.parse(first.dueAt)).length >= 2, 'two more fires', 60_000);
      const later = (await fires(id)).filter((f) => Date.parse(f.dueAt) >= Date.parse(first.dueAt));
      for (const f of later) expect(f, JSON.stringify(f)).toMatchObject({ status: 'failed', taskId: null, reason: expect.stringMatching(re) });
    };
    expect((await api.req('PATCH', `/api/users/${userId}`, { role: 'viewer' })).status).toBe(200);
    await refusedAfter(/creator rights-op is now viewer/);
    expect((await api.req('PATCH', `/api/users/${userId}`, { role: 'operator', disabled: true })).status).toBe(200);
    await refusedAfter(/creator rights-op is disabled/);
    expect((await api.req('PATCH', `/api/schedules/${id}`, { enabled: false })).status).toBe(200);

    const audit = (await api.get(`/api/audit?action=schedule.fire&targetId=${id}`)).body.items as any[];
    expect(audit.length).toBeGreaterThan(0);
    expect(audit[0]).toMatchObject({ actor: 'schedule:noop-1s', ok: false, details: expect.objectContaining({ createdBy: 'rights-op' }) });
  });
});
