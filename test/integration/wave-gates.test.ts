/**
 * Issue 15 "Updates and admin" on SQLite and MariaDB, through the one wave engine: soak time and
 * approval between waves (rollouts and file distributions alike, the approval audited and kept
 * across a server restart), runs whose targets were all skipped end `nothing_to_do`, not
 * `succeeded`, and `latest` means the newest package marked stable (or else the newest one a
 * rollout completed with), never simply the last upload.
 * Agents here run from the checkout with an empty install root: they take every update and fail
 * it (a failed target), which is enough to drive the waves of a rollout; file distributions apply
 * for real.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, Api, cleanup, databases, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { withDb } from '../helpers/raw-agent.js';
import { FAKE_SIG, fakePackage } from '../helpers/agent-packages.js';

afterAll(cleanup);

describe.each(await databases())('wave gates and stable packages (%s)', (db) => {
  let s: TestServer;
  let admin: Api;
  let op: Api;
  const ids: string[] = [];
  const roots: string[] = [];

  const upload = async (version: string): Promise<any> => {
    const r = await admin.req('POST', `/api/artifacts?version=${version}&signature=${encodeURIComponent(FAKE_SIG)}`, fakePackage(version), {
      'content-type': 'application/octet-stream',
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  };
  const waitRun = (api: Api, p: string, ok: (v: any) => boolean, what: string, ms = 30_000) =>
    waitFor(
      async () => {
        const v = (await api.get(p)).body;
        return ok(v) ? v : null;
      },
      what,
      ms,
    );

  beforeAll(async () => {
    s = await startServer({ db });
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
    const policy = path.join(tmpDir('policy'), 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ allowedPaths: ['/etc/muster-test'] }), { mode: 0o600 });
    for (const n of [1, 2, 3]) {
      const root = tmpDir(`root${n}`);
      const a = startAgent(s, {
        name: `gate-${n}`,
        labels: { grp: 'gate' },
        args: ['--policy', policy, '--install-root', tmpDir('noinstall')],
        env: { MUSTER_AGENT_FILE_ROOT: root },
      });
      const id = await agentId(a);
      await admin.waitAgent(id, 'online', 30_000);
      ids.push(id);
      roots.push(root);
    }
  }, 120_000);

  it('a rollout waits its soak time between waves, shows when the next starts, and not after the last', async () => {
    const a = await upload('7.0.0');
    // The preview counts the hosts that can update before anything starts.
    const pre = await admin.post('/api/rollouts/preview', { artifactId: a.id, selector: 'labels.grp == "gate"', waves: [1, '100%'] });
    expect(pre.status, JSON.stringify(pre.body)).toBe(200);
    expect(pre.body).toEqual({ version: '7.0.0', selector: 'labels.grp == "gate"', matched: 3, update: 3, waves: [1, 2], skipped: [], active: null });
    expect((await op.post('/api/rollouts/preview', { artifactId: a.id })).status).toBe(403);
    expect((await admin.get('/api/rollouts')).body.total).toBe(0); // a preview creates nothing

    // These agents have an (empty) install root: they take the update and fail it at once.
    const r = await admin.post('/api/rollouts', { artifactId: a.id, selector: 'labels.grp == "gate"', waves: [1, '100%'], maxFailures: 10, soakSeconds: 3 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ soakSeconds: 3, approval: false });
    const soaking = await waitRun(admin, `/api/rollouts/${r.body.id}`, (v) => v.state === 'soaking', 'soaking');
    expect(soaking.counts).toEqual({ failed: 1, pending: 2 });
    expect(Date.parse(soaking.nextWaveAt) - Date.parse(soaking.updatedAt)).toBeGreaterThan(2000);
    expect(soaking.reason).toBe('wave 1 done; next wave after 3 s');
    const done = await waitRun(admin, `/api/rollouts/${r.body.id}`, (v) => v.state === 'failed', 'done');
    expect(done).toMatchObject({ nextWaveAt: null, counts: { failed: 3 } });
    // The second wave did not start before the soak time was over.
    const second = done.targets.filter((t: any) => t.wave === 1).map((t: any) => Date.parse(t.updatedAt));
    expect(Math.min(...second)).toBeGreaterThanOrEqual(Date.parse(soaking.nextWaveAt) - 1100);
  });

  it('a rollout with approval waits for an admin to approve each next wave (audited)', async () => {
    const a = await upload('7.1.0');
    const r = await admin.post('/api/rollouts', { artifactId: a.id, selector: 'labels.grp == "gate"', waves: [1, '100%'], maxFailures: 10, approval: true });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const p = `/api/rollouts/${r.body.id}`;
    await waitRun(admin, p, (v) => v.state === 'awaiting_approval', 'awaiting approval');
    // Stored too (MariaDB once refused the 17-character state and kept `soaking`).
    await waitFor(
      () => withDb(s.dbUrl, async (k) => ((await k('rollouts').where({ id: r.body.id }).first('state'))?.state === 'awaiting_approval' ? true : null)),
      'awaiting_approval stored',
      10_000,
    );
    expect((await op.post(`${p}/approve`)).status).toBe(403);
    const ok = await admin.post(`${p}/approve`);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.currentWave).toBe(1);
    expect((await waitRun(admin, p, (v) => v.state === 'failed', 'done')).counts).toEqual({ failed: 3 });
    const audit = (await admin.get('/api/audit?action=rollout.approve')).body.items;
    expect(audit.filter((e: any) => e.targetId === r.body.id)).toHaveLength(1);
  });

  it('a rollout whose targets were all skipped ends nothing_to_do, not succeeded', async () => {
    const version = (await admin.get(`/api/agents/${ids[0]}`)).body.version as string;
    const same = await upload(version);
    const pre = await admin.post('/api/rollouts/preview', { artifactId: same.id, selector: 'labels.grp == "gate"' });
    expect(pre.body).toMatchObject({ update: 0, skipped: [{ reason: `already at ${version}`, count: 3 }] });
    const r = await admin.post('/api/rollouts', { artifactId: same.id, selector: 'labels.grp == "gate"' });
    expect(r.body).toMatchObject({ state: 'nothing_to_do', reason: `nothing to do: all 3 target(s) skipped (already at ${version}: 3)` });
  });

  it('a distribution with approval waits in awaiting_approval; operators approve (audited); the approval survives a restart', async () => {
    const f = await admin.post('/api/files', { path: '/etc/muster-test/gate.conf', content: Buffer.from('gate 1\n').toString('base64') });
    expect(f.status, JSON.stringify(f.body)).toBe(201);
    const viewer = await admin.userWithRole('viewer');
    const d = await op.post(`/api/files/${f.body.id}/distributions`, {
      targets: { selector: 'labels.grp == "gate"' },
      waves: [1, 2, '100%'],
      approval: true,
      soakSeconds: 1,
    });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    expect(d.body).toMatchObject({ approval: true, soakSeconds: 1 });
    const p = `/api/distributions/${d.body.id}`;
    expect((await op.post(`${p}/approve`)).status).toBe(409); // the first wave runs: nothing to approve
    const waiting = await waitRun(op, p, (v) => v.state === 'awaiting_approval', 'awaiting approval after the soak');
    expect(waiting).toMatchObject({ currentWave: 0, counts: { applied: 1, pending: 2 }, reason: 'wave 1 done; approve to start wave 2' });
    await new Promise((r) => setTimeout(r, 1500));
    expect((await op.get(p)).body.state).toBe('awaiting_approval'); // it waits, however long
    expect((await viewer.post(`${p}/approve`)).status).toBe(403);

    // The server restarts: the distribution still waits for its approval. What was stored is read
    // before the next process starts (it would otherwise move a stored `soaking` on at its first tick).
    await s.stop();
    const stored = await withDb(s.dbUrl, (k) => k('file_distributions').where({ id: d.body.id }).first('state', 'reason'));
    expect(stored).toEqual({ state: 'awaiting_approval', reason: 'wave 1 done; approve to start wave 2' });
    s = await s.restart();
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
    for (const id of ids) await admin.waitAgent(id, 'online', 30_000);
    expect((await op.get(p)).body.state).toBe('awaiting_approval');

    const ok = await op.post(`${p}/approve`);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    await waitRun(op, p, (v) => v.state === 'awaiting_approval' && v.currentWave === 1, 'awaiting approval of wave 3');
    expect((await op.post(`${p}/approve`)).status).toBe(200);
    const done = await waitRun(op, p, (v) => v.state === 'succeeded', 'succeeded');
    expect(done.counts).toEqual({ applied: 3 });
    for (const root of roots) expect(fs.readFileSync(path.join(root, 'etc/muster-test/gate.conf'), 'utf8')).toBe('gate 1\n');
    const audit = (await admin.get('/api/audit?action=distribution.approve')).body.items;
    expect(audit.filter((e: any) => e.targetId === d.body.id && e.ok !== false)).toHaveLength(2);
  });

  it('a distribution with no target ends nothing_to_do, not succeeded', async () => {
    const f = await admin.post('/api/files', { path: '/etc/muster-test/none.conf', content: Buffer.from('x\n').toString('base64') });
    const d = await op.post(`/api/files/${f.body.id}/distributions`, { targets: { selector: 'labels.grp == "nobody"' } });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    expect(d.body).toMatchObject({ state: 'nothing_to_do', reason: 'nothing to do: no target', total: 0 });
  });

  it('latest is the newest stable package (or the newest a rollout completed with), never the last upload; enrollment says which', async () => {
    const dl = () => fetch(`${s.url}/api/artifacts/latest/download`, { headers: { 'x-muster-enroll-token': s.enrollToken } });
    const older = await upload('8.0.0');
    const newer = await upload('8.1.0');
    expect(older.stable).toBe(false);
    let latest = (await admin.get('/api/artifacts/latest')).body;
    expect(latest).toMatchObject({ artifact: null, source: 'none' });
    expect(latest.uploaded).toBeGreaterThanOrEqual(2);
    const none = await dl();
    expect(none.status).toBe(404);
    expect(((await none.json()) as any).error.message).toMatch(/mark one stable/);
    expect((await admin.get('/api/enrollment')).body.package).toMatchObject({ version: null, source: 'none' });
    const script = await (await fetch(`${s.url}/install-agent.sh`)).text();
    expect(script.split('\n')[1]).toMatch(/no agent package to install yet/);

    // Only admins mark a package stable; it is audited.
    expect((await op.post(`/api/artifacts/${older.id}/stable`)).status).toBe(403);
    const marked = await admin.post(`/api/artifacts/${older.id}/stable`);
    expect(marked.status).toBe(200);
    expect(marked.body).toMatchObject({ stable: true, stableBy: 'admin' });
    latest = (await admin.get('/api/artifacts/latest')).body;
    expect(latest).toMatchObject({ source: 'stable', artifact: { id: older.id, version: '8.0.0' } });
    const got = await dl();
    expect(got.status).toBe(200);
    expect(got.headers.get('x-muster-version')).toBe('8.0.0'); // not 8.1.0, the last upload
    await got.arrayBuffer();
    expect((await admin.get('/api/enrollment')).body.package).toMatchObject({ version: '8.0.0', source: 'stable' });
    const script2 = await fetch(`${s.url}/install-agent.sh`);
    expect(script2.headers.get('x-muster-latest-version')).toBe('8.0.0');
    expect((await script2.text()).split('\n')[1]).toMatch(/latest agent package 8\.0\.0 \(marked stable\)/);

    // Unmarked: none stable; a rollout that completed with 8.1.0 makes it latest.
    expect((await admin.req('DELETE', `/api/artifacts/${older.id}/stable`)).body).toMatchObject({ stable: false, stableBy: null });
    expect((await admin.get('/api/artifacts/latest')).body.source).toBe('none');
    // (Agents from a checkout cannot complete a rollout: the record of one is written as it would be.)
    await withDb(s.dbUrl, (k) =>
      k('rollouts').insert({
        id: 'done-rollout',
        artifact_id: newer.id,
        version: '8.1.0',
        size: newer.size,
        sha256: newer.sha256,
        signature: FAKE_SIG,
        selector: 'all',
        waves: '["100%"]',
        max_failures: 0,
        allow_downgrade: false,
        state: 'succeeded',
        current_wave: 0,
        failure_base: 0,
        created_by: 'admin',
        created_at: Date.now(),
        updated_at: Date.now(),
        finished_at: Date.now(),
      }),
    );
    expect((await admin.get('/api/artifacts/latest')).body).toMatchObject({ source: 'rollout', artifact: { version: '8.1.0' } });
    const actions = (await admin.get('/api/audit?limit=100')).body.items.map((e: any) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['artifact.stable', 'artifact.unstable']));
  });
});
