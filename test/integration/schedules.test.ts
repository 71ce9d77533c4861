/**
 * Schedules (issue 13): validation, write-only secrets, next fire times, roles; and on real agents a
 * small-interval schedule that fires each due time exactly once across a graceful restart and a
 * crash (SIGKILL), with missed fires skipped or run once as configured. SQLite and MariaDB.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitTask } from '../helpers/exec.js';
import { withDb } from '../helpers/raw-agent.js';
import { Api, agentId, cleanup, databases, sleep, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

const dbs = await databases();
const ENV = { MUSTER_SCHEDULE_MIN_INTERVAL_SEC: '1', MUSTER_SCHEDULE_TICK_MS: '200', MUSTER_SCHEDULE_MISFIRE_GRACE_SEC: '1' };

describe.each(dbs)('schedules (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  let operator: Api;
  let scriptId: string;
  let out: string;

  beforeAll(async () => {
    out = tmpDir('sched-out');
    s = await startServer({ db, env: ENV });
    api = await Api.login(s.url);
    operator = await api.userWithRole('operator', 'sched-op');
    const a = startAgent(s, { name: 'sched-1' });
    await api.waitAgent(await agentId(a), 'online');
    const r = await operator.post('/api/scripts', {
      name: 'append',
      body: 'printf "%s %s\\n" "$MUSTER_PARAM_TAG" "$([ "$MUSTER_PARAM_KEY" = k3y ] && echo key-ok)" >> "$MUSTER_PARAM_FILE"',
      params: [
        { name: 'file', type: 'string', required: true },
        { name: 'tag', type: 'string', default: 'x' },
        { name: 'key', type: 'secret', required: true },
      ],
    });
    expect(r.status).toBe(201);
    scriptId = r.body.id;
  });
  afterAll(cleanup);

  it('validates timing, parameters and roles; shows the next five fires; secrets are write-only', async () => {
    const base = {
      name: 'cron-one',
      scriptId,
      params: { file: path.join(out, 'never'), key: 'k3y' },
      selector: 'sched-1',
      cron: '*/5 * * * *',
      timeZone: 'Asia/Kolkata',
      enabled: false,
    };
    const bad = async (body: Record<string, unknown>, re: RegExp) => {
      const r = await operator.post('/api/schedules', body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.message).toMatch(re);
    };
    await bad({ ...base, cron: '* * * * * *' }, /exactly 5 fields/);
    await bad({ ...base, cron: '61 * * * *' }, /invalid cron expression/);
    await bad({ ...base, timeZone: 'Mars/Olympus' }, /unknown time zone/);
    await bad({ ...base, intervalSec: 60 }, /either cron or intervalSec/);
    await bad({ ...base, cron: null }, /either cron or intervalSec/);
    await bad({ ...base, cron: null, intervalSec: 0 }, /intervalSec/);
    await bad({ ...base, params: { file: 'x' } }, /key: required/);
    await bad({ ...base, params: { ...base.params, nope: 1 } }, /unknown parameter/);
    await bad({ ...base, selector: 'labels.role ==' }, /./);
    await bad({ ...base, version: 5 }, /no version 5/);
    const viewer = await api.userWithRole('viewer');
    expect((await viewer.post('/api/schedules', base)).status).toBe(403);

    const r = await operator.post('/api/schedules', { ...base, enabled: true });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({
      name: 'cron-one',
      enabled: true,
      cron: '*/5 * * * *',
      timeZone: 'Asia/Kolkata',
      params: { file: base.params.file },
      secretParams: ['key'],
    });
    expect(r.body.nextFires).toHaveLength(5);
    const times = r.body.nextFires.map((t: string) => Date.parse(t));
    for (let i = 0; i < 5; i++) {
      // Every 5 minutes on the minute (Kolkata is UTC+5:30: still a multiple of 5 minutes).
      expect(times[i] % 300_000).toBe(0);
      if (i) expect(times[i] - times[i - 1]).toBe(300_000);
    }
    expect(times[0]).toBeGreaterThan(Date.now() - 1000);
    expect(r.body.nextFireAt).toBe(r.body.nextFires[0]);
    expect((await operator.post('/api/schedules', base)).status).toBe(409);

    // Daily at 09:30 in New York: 14:30 UTC in winter.
    const ny = await operator.req('PATCH', `/api/schedules/${r.body.id}`, { cron: '30 9 * * *', timeZone: 'America/New_York' });
    expect(ny.status).toBe(200);
    expect(ny.body.nextFires.map((t: string) => t.slice(11, 16))).toEqual(['14:30', '14:30', '14:30', '14:30', '14:30']);

    for (const p of [`/api/schedules/${r.body.id}`, '/api/schedules', `/api/audit?targetId=${r.body.id}`]) {
      expect(JSON.stringify((await api.get(p)).body), p).not.toContain('k3y');
    }
    const other = await api.userWithRole('operator');
    expect((await other.req('PATCH', `/api/schedules/${r.body.id}`, { enabled: false })).status).toBe(403);
    const off = await operator.req('PATCH', `/api/schedules/cron-one`, { enabled: false });
    expect(off.body).toMatchObject({ enabled: false, nextFireAt: null, nextFires: [] });
    // A script that a schedule runs cannot be deleted.
    expect((await operator.delete(`/api/scripts/${scriptId}`)).status).toBe(409);
    expect((await api.delete(`/api/schedules/${r.body.id}`)).status).toBe(204);
    const audit = await api.get(`/api/audit?targetId=${r.body.id}`);
    expect(audit.body.items.map((x: any) => x.action)).toEqual(expect.arrayContaining(['schedule.create', 'schedule.update', 'schedule.delete']));
  });

  it('fires every due time exactly once across a restart and a crash; missed fires are run once or skipped', async () => {
    const mk = async (name: string, missed: 'skip' | 'run_once') => {
      const r = await operator.post('/api/schedules', {
        name,
        scriptId,
        params: { file: path.join(out, `${name}.log`), tag: name, key: 'k3y' },
        selector: 'sched-1',
        intervalSec: 2,
        missed,
        overlap: 'allow',
        // A fire while the agent is still reconnecting after a restart waits for it.
        offline: 'queue',
      });
      expect(r.status).toBe(201);
      return r.body.id as string;
    };
    const once = await mk('every-2s-once', 'run_once');
    const skip = await mk('every-2s-skip', 'skip');
    const started = async (id: string) =>
      (await api.get(`/api/schedules/${id}/history?limit=1000`)).body.items.filter((f: any) => f.status === 'started').length;
    await waitFor(async () => (await started(once)) >= 2, 'two fires before the restart', 60_000);

    // Down for a while: fires come due meanwhile.
    await s.stop();
    await sleep(4500);
    s = await s.restart();
    await waitFor(async () => (await started(once)) >= 4, 'fires after the restart', 60_000);
    // A crash (no graceful stop), then more fires.
    await s.kill();
    await sleep(4500);
    s = await s.restart();
    const n = await started(once);
    await waitFor(async () => (await started(once)) >= n + 2, 'fires after the crash', 60_000);
    for (const id of [once, skip]) expect((await api.req('PATCH', `/api/schedules/${id}`, { enabled: false })).status).toBe(200);

    for (const [id, name] of [
      [once, 'every-2s-once'],
      [skip, 'every-2s-skip'],
    ] as const) {
      const h = (await api.get(`/api/schedules/${id}/history?limit=1000`)).body;
      const fires = h.items as any[];
      const dues = fires.map((f) => Date.parse(f.dueAt));
      // Each due time at most once, all on the schedule's 2 s grid.
      expect(new Set(dues).size).toBe(dues.length);
      for (const d of dues) expect((d - dues[dues.length - 1]!) % 2000).toBe(0);
      const tasks = fires.filter((f) => f.status === 'started');
      for (const f of tasks) {
        const done = await waitTask(api, f.taskId, 60_000).catch(async (err: unknown) => {
          throw new Error(
            `${String(err)}: ${JSON.stringify((await api.get(`/api/tasks/${f.taskId}`)).body)} fire ${JSON.stringify(f)}\n${s.output().slice(-6000)}`,
          );
        });
        expect(done.status, JSON.stringify(done)).toBe('succeeded');
      }
      // One task per started fire, one run on the agent per task.
      const byTask = await withDb(s.dbUrl, (k) => k('tasks').where({ schedule_id: id }).select('id', 'script_version'));
      expect(byTask.map((t: any) => t.id).sort()).toEqual(tasks.map((f) => f.taskId).sort());
      const lines = fs
        .readFileSync(path.join(out, `${name}.log`), 'utf8')
        .trim()
        .split('\n');
      expect(lines).toHaveLength(tasks.length);
      expect(new Set(lines)).toEqual(new Set([`${name} key-ok`]));
      expect(fires.filter((f) => f.status === 'claimed')).toEqual([]);
      if (id === once) {
        expect(fires.filter((f) => f.status === 'missed')).toEqual([]);
        expect(fires.some((f) => f.status === 'started' && /ran once for fire\(s\) missed/.test(f.reason ?? ''))).toBe(true);
        const h2 = (await api.get(`/api/schedules/${id}/history`)).body;
        expect(h2.stats.successRate).toBe(1);
      } else {
        // After each downtime the missed fire is recorded, without a task.
        const missed = fires.filter((f) => f.status === 'missed');
        expect(missed.length).toBeGreaterThanOrEqual(2);
        for (const f of missed) expect(f.taskId).toBeNull();
      }
    }
    const t = await api.get(`/api/tasks/${(await api.get(`/api/schedules/${once}/history`)).body.items.find((f: any) => f.taskId).taskId}`);
    expect(t.body).toMatchObject({ scheduleId: once, scriptId, createdBy: 'schedule:every-2s-once', secretEnv: ['MUSTER_PARAM_KEY'] });

    // A stop between claiming a fire and recording its task: the next start links the task that
    // was created; a claim without a task becomes `failed` (never run a second time).
    const last = (await api.get(`/api/schedules/${once}/history`)).body.items.find((f: any) => f.status === 'started');
    await s.kill();
    const nodeId = await withDb(s.dbUrl, async (k) => {
      await k('schedule_fires')
        .where({ schedule_id: once, due_at: Date.parse(last.dueAt) })
        .update({ status: 'claimed', task_id: null });
      const row = await k('schedule_fires')
        .where({ schedule_id: once, due_at: Date.parse(last.dueAt) })
        .first();
      await k('schedule_fires').insert({
        schedule_id: once,
        due_at: Date.parse(last.dueAt) + 2000 * 1000,
        fired_at: Date.now() + 60_000,
        node_id: row.node_id,
        status: 'claimed',
      });
      return row.node_id;
    });
    expect(nodeId).toBeTruthy();
    s = await s.restart();
    const after = await waitFor(
      async () => {
        const items = (await api.get(`/api/schedules/${once}/history?limit=1000`)).body.items as any[];
        return items.some((f) => f.status === 'claimed') ? null : items;
      },
      'claims settled',
      30_000,
    );
    expect(after.find((f) => f.dueAt === last.dueAt)).toMatchObject({ status: 'started', taskId: last.taskId });
    expect(after.find((f) => Date.parse(f.dueAt) === Date.parse(last.dueAt) + 2000 * 1000)).toMatchObject({ status: 'failed', taskId: null });
  });

  it('overlap "skip" skips a fire while the previous run still goes; a selector that matches nothing fails the fire', async () => {
    const slow = await operator.post('/api/scripts', { name: 'slow', body: 'sleep 3' });
    expect(slow.status).toBe(201);
    const r = await operator.post('/api/schedules', { name: 'slow-every-1s', scriptId: slow.body.id, selector: 'sched-1', intervalSec: 1, overlap: 'skip' });
    expect(r.status).toBe(201);
    const hist = async (id: string) => (await api.get(`/api/schedules/${id}/history?limit=1000`)).body;
    await waitFor(async () => (await hist(r.body.id)).items.some((f: any) => f.status === 'skipped'), 'a skipped fire', 60_000);
    await api.req('PATCH', `/api/schedules/${r.body.id}`, { enabled: false });
    const skipped = (await hist(r.body.id)).items.find((f: any) => f.status === 'skipped');
    expect(skipped).toMatchObject({ taskId: null, reason: expect.stringMatching(/previous run is still going/) });

    const none = await operator.post('/api/schedules', { name: 'nobody', scriptId: slow.body.id, selector: 'labels.none == "x"', intervalSec: 1 });
    expect(none.status).toBe(201);
    const failed = await waitFor(async () => (await hist(none.body.id)).items.find((f: any) => f.status === 'failed'), 'a failed fire', 60_000);
    expect(failed.reason).toMatch(/no agent matches/);
    await api.req('PATCH', `/api/schedules/${none.body.id}`, { enabled: false });
  });

  it('two server processes on one database never fire the same due time twice', async () => {
    const second = await startServer({ dbUrl: s.dbUrl, dataDir: tmpDir('sched-b'), env: { ...ENV, MUSTER_NODE_ID: 'node-b' } });
    try {
      const r = await operator.post('/api/schedules', {
        name: 'two-nodes',
        scriptId,
        params: { file: path.join(out, 'two-nodes.log'), tag: 'two', key: 'k3y' },
        selector: 'sched-1',
        intervalSec: 1,
        overlap: 'allow',
      });
      expect(r.status).toBe(201);
      const fires = async () => (await api.get(`/api/schedules/${r.body.id}/history?limit=1000`)).body.items as any[];
      await waitFor(async () => (await fires()).length >= 8, 'eight fires', 60_000);
      await api.req('PATCH', `/api/schedules/${r.body.id}`, { enabled: false });
      await sleep(1000); // a fire claimed just before the PATCH finishes its task insert
      const all = await fires();
      const dues = all.map((f) => f.dueAt);
      expect(new Set(dues).size).toBe(dues.length);
      const tasks = await withDb(s.dbUrl, (k) => k('tasks').where({ schedule_id: r.body.id }).select('id'));
      expect(tasks.map((t: any) => t.id).sort()).toEqual(
        all
          .filter((f) => f.taskId)
          .map((f) => f.taskId)
          .sort(),
      );
      process.stderr.write(
        `two-nodes fires by node: ${JSON.stringify(all.reduce((m: Record<string, number>, f) => ({ ...m, [f.nodeId]: (m[f.nodeId] ?? 0) + 1 }), {}))}\n`,
      );
    } finally {
      await second.stop();
    }
  });
});
