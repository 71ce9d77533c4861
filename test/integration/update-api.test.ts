/**
 * The artifacts and rollouts API on SQLite and MariaDB: roles, validation, waves, pause/resume/
 * cancel, skipping agents already on the version, conflicts, audit, and a rollout that survives a
 * server restart. Agents here run from the checkout (dist/agent.js), not from an installed
 * layout, so they refuse every update with a reason: enough to drive the rollout machinery
 * (the real update path is in update-rollout.test.ts).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { agentId, Api, cleanup, consoleSocket, databases, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { FAKE_SIG, fakePackage } from '../helpers/agent-packages.js';

async function upload(api: Api, version: string, filename?: string): Promise<any> {
  const name = filename ? `&filename=${filename}` : '';
  const r = await api.req('POST', `/api/artifacts?version=${version}&signature=${encodeURIComponent(FAKE_SIG)}${name}`, fakePackage(version), {
    'content-type': 'application/octet-stream',
  });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

afterAll(cleanup);

describe.each(await databases())('rollouts API (%s)', (db) => {
  let server: TestServer;
  let api: Api;

  it('validates, checks roles, and audits', async () => {
    server = await startServer({ db });
    api = await Api.login(server.url);
    const viewer = await api.userWithRole('viewer');
    const operator = await api.userWithRole('operator');
    const a = await upload(api, '2.0.0');
    expect((await viewer.get('/api/artifacts')).body.items.map((x: any) => x.version)).toEqual(['2.0.0']);
    expect((await operator.post('/api/rollouts', { artifactId: a.id })).status).toBe(403);
    expect((await viewer.post('/api/rollouts', { artifactId: a.id })).status).toBe(403);
    expect((await api.post('/api/rollouts', {})).body.error.code).toBe('bad_request');
    expect((await api.post('/api/rollouts', { artifactId: a.id, waves: ['150%'] })).status).toBe(400);
    expect((await api.post('/api/rollouts', { artifactId: 'nope' })).status).toBe(404);
    expect((await api.post('/api/rollouts', { artifactId: a.id, selector: 'labels.x ==' })).body.error.code).toBe('selector_syntax');
    expect(
      (await api.req('POST', '/api/artifacts?version=2.0.1&signature=bad', fakePackage('2.0.1'), { 'content-type': 'application/octet-stream' })).status,
    ).toBe(400);
    expect((await api.get('/api/rollouts/does-not-exist')).status).toBe(404);
    const audit = (await api.get('/api/audit?action=artifact.upload')).body;
    expect(audit.items[0]).toMatchObject({ action: 'artifact.upload' });
  });

  it('runs waves, pauses past maxFailures, resumes, cancels; skips agents already on the version', async () => {
    const agents = ['r-1', 'r-2', 'r-3'].map((name) => startAgent(server, { name, labels: { grp: 'r' }, args: ['--install-root', tmpDir('noinstall')] }));
    // An agent without an install root (a checkout, like the server's local agent) is skipped.
    const plain = startAgent(server, { name: 'plain', labels: { grp: 'r-plain' } });
    await api.waitAgent(await agentId(plain), 'online');
    const ids = await Promise.all(agents.map(agentId));
    for (const id of ids) await api.waitAgent(id, 'online');
    const version = (await api.get(`/api/agents/${ids[0]}`)).body.version as string;

    // Already at the version: every target skipped, done at once.
    const same = await upload(api, version);
    const skip = await api.post('/api/rollouts', { artifactId: same.id, selector: 'labels.grp == "r"' });
    // Nothing was updated: that is not a success (issue 15): nothing_to_do, with the skip reasons.
    expect(skip.body.state, JSON.stringify(skip.body)).toBe('nothing_to_do');
    expect(skip.body.reason).toBe(`nothing to do: all 3 target(s) skipped (already at ${version}: 3)`);
    expect(skip.body.targets.map((t: any) => t.state)).toEqual(['skipped', 'skipped', 'skipped']);

    // A package for another CPU architecture skips every agent.
    const foreign = await upload(api, '5.0.0', 'muster-agent-5.0.0-linux-s390x.tar.gz');
    expect(foreign.arch).toBe('s390x');
    const f = await api.post('/api/rollouts', { artifactId: foreign.id, selector: 'labels.grp == "r"' });
    expect(f.body.state).toBe('nothing_to_do');
    expect(f.body.reason).toMatch(/^nothing to do: all 3 target\(s\) skipped \(package is for s390x, agent is \w+: 3\)$/);
    expect(f.body.targets.map((t: any) => t.reason)).toEqual(Array(3).fill(expect.stringMatching(/package is for s390x/)));

    const art = await upload(api, '3.0.0');
    const consoleWs = await consoleSocket(server, api);
    const r = await api.post('/api/rollouts', { artifactId: art.id, selector: 'labels.grp == "r"', waves: [1, '50%', '100%'], maxFailures: 0 });
    expect(r.status).toBe(201);
    // Consoles hear about progress live.
    await consoleWs.next((m) => m.type === 'rollout.updated' && m.rolloutId === r.body.id, 15_000, 'rollout.updated');
    consoleWs.close();
    expect(r.body.waves.map((w: any) => w.size)).toEqual([1, 1, 1]);
    const id = r.body.id;
    const paused = await waitFor(async () => {
      const v = (await api.get(`/api/rollouts/${id}`)).body;
      return v.state === 'paused' ? v : null;
    }, 'paused after the first failure');
    expect(paused.targets.filter((t: any) => t.wave === 0)[0]).toMatchObject({
      state: 'failed',
      reason: expect.stringMatching(/running release .* not found/),
    });
    expect(paused.targets.filter((t: any) => t.wave > 0).map((t: any) => t.state)).toEqual(['pending', 'pending']);
    expect(paused.waves.map((w: any) => w.state)).toEqual(['done', 'waiting', 'waiting']);
    // One active rollout at a time.
    expect((await api.post('/api/rollouts', { artifactId: art.id, selector: 'labels.grp == "r"' })).status).toBe(409);
    expect((await api.post(`/api/rollouts/${id}/pause`)).status).toBe(409);

    // Resume: only new failures count; the next wave fails and pauses again.
    // (The response may already say paused again: these agents fail at once.)
    expect((await api.post(`/api/rollouts/${id}/resume`)).status).toBe(200);
    const again = await waitFor(async () => {
      const v = (await api.get(`/api/rollouts/${id}`)).body;
      return v.state === 'paused' && v.currentWave === 1 ? v : null;
    }, 'paused after wave 1');
    expect(again.failures).toBe(2);
    expect(again.targets.filter((t: any) => t.wave === 2)[0].state).toBe('pending');

    const c = await api.post(`/api/rollouts/${id}/cancel`);
    expect(c.body.state).toBe('cancelled');
    const final = (await api.get(`/api/rollouts/${id}`)).body;
    expect(final.targets.filter((t: any) => t.wave === 2)[0]).toMatchObject({ state: 'skipped', reason: 'cancelled by admin' });
    const p = await api.post('/api/rollouts', { artifactId: art.id, selector: 'labels.grp == "r-plain"' });
    expect(p.body.targets).toEqual([expect.objectContaining({ state: 'skipped', reason: expect.stringMatching(/cannot update itself/) })]);
    expect(p.body).toMatchObject({
      state: 'nothing_to_do',
      reason: expect.stringMatching(/^nothing to do: all 1 target\(s\) skipped \(agent cannot update itself/),
    });
    await plain.stop();
    const list = (await api.get('/api/rollouts')).body;
    expect(list.total).toBe(4);
    expect(list.items[1]).toMatchObject({ id, state: 'cancelled', total: 3 });
    const actions = (await api.get('/api/audit?limit=50')).body.items.map((e: any) => e.action);
    expect(actions).toEqual(expect.arrayContaining(['rollout.create', 'rollout.resume', 'rollout.cancel']));
    for (const a of agents) await a.stop();
  });

  it('keeps driving a rollout across a server restart (update sent when the agent comes back)', async () => {
    const installRoot = tmpDir('noinstall');
    const agent = startAgent(server, { name: 'late', labels: { grp: 'late' }, args: ['--install-root', installRoot] });
    const id = await agentId(agent);
    await api.waitAgent(id, 'online');
    await agent.stop();
    await api.waitAgent(id, 'offline');
    const art = await upload(api, '4.0.0');
    const r = await api.post('/api/rollouts', { artifactId: art.id, selector: 'labels.grp == "late"', maxFailures: 3 });
    expect(r.body.targets[0].state).toBe('pending');
    await server.stop();
    server = await server.restart();
    api = await Api.login(server.url);
    startAgent(server, { stateDir: agent.stateDir, name: 'late', labels: { grp: 'late' }, args: ['--install-root', installRoot] });
    const done = await waitFor(
      async () => {
        const v = (await api.get(`/api/rollouts/${r.body.id}`)).body;
        return v.state === 'failed' ? v : null;
      },
      'rollout finished after the restart',
      30_000,
    );
    expect(done.targets[0]).toMatchObject({ agentId: id, state: 'failed', reason: expect.stringMatching(/running release .* not found/) });
  });
});
