/**
 * Self-update end to end: real packages (1.0.0 installed, 1.1.0 good, 1.2.0 broken), uploaded
 * as artifacts, agents installed with install-agent.sh --root and run through the real launcher
 * under a supervisor that restarts them like systemd's Restart=always.
 */
import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bigTmpDir,
  trackBigDir,
  buildPackage,
  currentRelease,
  installAgent,
  installPaths,
  keygen,
  run,
  sha256File,
  signPackage,
  snapshotTree,
  stopAllSupervisors,
  supervise,
  type Supervisor,
} from '../helpers/agent-packages.js';
import { AGENT_START_MS, Api, cleanup, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

let server: TestServer;
let api: Api;
let keys: { priv: string; pub: string };
const pkg: Record<'base' | 'good' | 'broken', string> = { base: '', good: '', broken: '' };
const artifact: Record<'base' | 'good' | 'broken', any> = { base: null, good: null, broken: null };

interface Installed {
  name: string;
  root: string;
  sup: Supervisor;
  id: string;
}

/** Installs 1.0.0 into a fresh root, starts it under the supervisor, waits until it is online. */
async function installed(name: string, labels: Record<string, string>, env: Record<string, string> = {}, viaEnrollment = false): Promise<Installed> {
  const root = bigTmpDir(`root-${name}`);
  const extra = ['--name', name, ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`])];
  if (viaEnrollment) {
    // Exactly the console's command (curl … | sudo bash -s -- …), minus sudo, into a temp root.
    const cmd: string = (await api.get('/api/enrollment')).body.installCommand;
    expect(cmd).toContain('--public-key-b64');
    await run('bash', ['-c', `${cmd.replace('| sudo bash', '| bash')} --root ${root} --no-start ${extra.join(' ')}`]);
  } else {
    await installAgent(root, ['--server', server.wsUrl, '--token', server.enrollToken, '--package', pkg.base, '--public-key', keys.pub, ...extra]);
  }
  const sup = supervise(root, env);
  const idFile = path.join(installPaths(root).state, 'agent-id');
  const id = await waitFor(() => (fs.existsSync(idFile) ? fs.readFileSync(idFile, 'utf8').trim() : ''), `${name} agent id`, AGENT_START_MS);
  await api.waitAgent(id, 'online');
  return { name, root, sup, id };
}

async function upload(file: string): Promise<any> {
  const sig = await signPackage(keys.priv, file);
  const r = await api.req(
    'POST',
    `/api/artifacts?filename=${encodeURIComponent(path.basename(file))}&signature=${encodeURIComponent(sig)}`,
    new Uint8Array(fs.readFileSync(file)),
    { 'content-type': 'application/octet-stream' },
  );
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

async function rolloutDone(id: string, states = ['succeeded', 'failed', 'paused', 'cancelled', 'nothing_to_do'], timeoutMs = 90_000): Promise<any> {
  return waitFor(
    async () => {
      const r = await api.get(`/api/rollouts/${id}`);
      const settled = r.body.targets.every((t: any) => ['succeeded', 'failed', 'rolled_back', 'skipped'].includes(t.state) || t.wave > r.body.currentWave);
      return states.includes(r.body.state) && settled ? r.body : null;
    },
    `rollout ${id} settled`,
    timeoutMs,
    250,
  );
}

beforeAll(async () => {
  const out = bigTmpDir('pkgs');
  [pkg.base, pkg.good, pkg.broken] = await Promise.all([buildPackage('1.0.0', out), buildPackage('1.1.0', out), buildPackage('1.2.0', out, true)]);
  keys = await keygen(tmpDir('keys'));
  const rawPub = createPublicKey(fs.readFileSync(keys.pub, 'utf8')).export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
  server = await startServer({ env: { MUSTER_UPDATE_TIMEOUT_SEC: '90', MUSTER_UPDATE_PUBLIC_KEY: rawPub } });
  trackBigDir(server.dataDir);
  api = await Api.login(server.url);
  artifact.good = await upload(pkg.good);
  artifact.broken = await upload(pkg.broken);
  artifact.base = await upload(pkg.base);
  // `latest` (what the enrollment command installs) is the newest package marked stable, not the last upload.
  expect((await api.post(`/api/artifacts/${artifact.base.id}/stable`)).status).toBe(200);
}, 240_000);

afterAll(async () => {
  await stopAllSupervisors();
  await cleanup();
});

describe('artifacts', () => {
  it('stores uploads with their digest; refuses bad uploads; download needs credentials', async () => {
    expect(artifact.good).toMatchObject({ version: '1.1.0', size: fs.statSync(pkg.good).size, sha256: sha256File(pkg.good) });
    const list = await api.get('/api/artifacts');
    expect(list.body.items.map((a: any) => a.version)).toEqual(['1.0.0', '1.2.0', '1.1.0']);
    // A label that disagrees with the package's own VERSION is refused.
    const sig = await signPackage(keys.priv, pkg.good);
    const wrong = await api.req('POST', `/api/artifacts?version=9.9.9&signature=${encodeURIComponent(sig)}`, new Uint8Array(fs.readFileSync(pkg.good)), {
      'content-type': 'application/octet-stream',
    });
    expect(wrong.status).toBe(400);
    const viewer = await api.userWithRole('viewer');
    const denied = await viewer.req('POST', `/api/artifacts?version=1.1.0&signature=${encodeURIComponent(sig)}`, new Uint8Array([1, 2, 3]), {
      'content-type': 'application/octet-stream',
    });
    expect(denied.status).toBe(403);
    expect((await fetch(`${server.url}/api/artifacts/${artifact.good.id}/download`)).status).toBe(401);
    const withToken = await fetch(`${server.url}/api/artifacts/latest/download`, { headers: { 'X-Muster-Enroll-Token': server.enrollToken } });
    expect(withToken.status).toBe(200);
    await withToken.arrayBuffer();
  });
});

describe('self-update', () => {
  it('installs with the enrollment command, then updates to the new version through the launcher', async () => {
    const a = await installed('upd-ok', { case: 'ok' }, {}, true);
    expect(currentRelease(a.root)).toBe('1.0.0');
    const created = await api.post('/api/rollouts', { artifactId: artifact.good.id, selector: 'labels.case == "ok"' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const done = await rolloutDone(created.body.id);
    expect(done.state).toBe('succeeded');
    expect(done.targets).toEqual([expect.objectContaining({ agentId: a.id, state: 'succeeded', fromVersion: '1.0.0' })]);
    const agent = await api.waitAgent(a.id, 'online');
    expect(agent.version).toBe('1.1.0');
    expect(currentRelease(a.root)).toBe('1.1.0');
    const p = installPaths(a.root);
    expect(fs.existsSync(path.join(p.state, 'update-marker'))).toBe(false);
    expect(fs.readdirSync(p.releases).sort()).toEqual(['1.0.0', '1.1.0']);
    // A second rollout of the same version skips the agent already on it.
    const again = await api.post('/api/rollouts', { artifactId: artifact.good.id, selector: 'labels.case == "ok"' });
    expect(again.body.targets).toEqual([expect.objectContaining({ state: 'skipped' })]);
    expect(await rolloutDone(again.body.id)).toMatchObject({ state: 'nothing_to_do', reason: 'nothing to do: all 1 target(s) skipped (already at 1.1.0: 1)' });
    const audit = await api.get('/api/audit?action=rollout.create');
    expect(audit.body.items.length).toBeGreaterThanOrEqual(2);
    // Older versions are refused unless the rollout allows a downgrade.
    const down = await api.post('/api/rollouts', { artifactId: artifact.base.id, selector: 'labels.case == "ok"' });
    const refused = await rolloutDone(down.body.id);
    expect(refused.targets[0]).toMatchObject({ state: 'failed', reason: expect.stringMatching(/refusing downgrade from 1\.1\.0 to 1\.0\.0/) });
    await api.post(`/api/rollouts/${down.body.id}/cancel`);
    expect(currentRelease(a.root)).toBe('1.1.0');
    const allowed = await api.post('/api/rollouts', { artifactId: artifact.base.id, selector: 'labels.case == "ok"', allowDowngrade: true });
    expect((await rolloutDone(allowed.body.id)).state).toBe('succeeded');
    expect((await api.waitAgent(a.id, 'online')).version).toBe('1.0.0');
    expect(currentRelease(a.root)).toBe('1.0.0');
  });

  it('refuses a wrong sha256 or a wrong signature and changes nothing on disk', async () => {
    const a = await installed('upd-bad', { case: 'bad' });
    const before = snapshotTree(installPaths(a.root).opt);
    const url = `${server.url}/api/artifacts/${artifact.good.id}/download`;
    const goodSig = artifact.good.signature;
    const otherSig = artifact.broken.signature; // valid signature, of another package
    for (const [what, body, reason] of [
      ['sha256', { sha256: 'f'.repeat(64), signature: goodSig }, /sha256 mismatch/],
      ['signature', { sha256: artifact.good.sha256, signature: otherSig }, /signature does not verify/],
    ] as const) {
      const r = await api.post('/api/rollouts', { url, version: '1.1.0', size: artifact.good.size, ...body, selector: 'labels.case == "bad"' });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const done = await rolloutDone(r.body.id);
      expect(done.targets[0].state, what).toBe('failed');
      expect(done.targets[0].reason).toMatch(reason);
      expect(done.state).toBe('paused'); // maxFailures 0
      expect((await api.post(`/api/rollouts/${r.body.id}/cancel`)).status).toBe(200);
      expect(snapshotTree(installPaths(a.root).opt)).toEqual(before);
      expect(fs.existsSync(path.join(installPaths(a.root).state, 'update-marker'))).toBe(false);
    }
    expect((await api.get(`/api/agents/${a.id}`)).body).toMatchObject({ status: 'online', version: '1.0.0' });
    expect(a.sup.starts).toBe(1); // never restarted
  });

  it('rolls a broken version back and stops the rollout after the first failure (waves, maxFailures 0)', async () => {
    const agents = await Promise.all(['w-1', 'w-2', 'w-3'].map((n) => installed(n, { case: 'waves' })));
    const r = await api.post('/api/rollouts', { artifactId: artifact.broken.id, selector: 'labels.case == "waves"', waves: [1, '100%'], maxFailures: 0 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.waves.map((w: any) => w.size)).toEqual([1, 2]);
    const done = await rolloutDone(r.body.id, ['paused']);
    const first = done.targets.find((t: any) => t.wave === 0);
    expect(first.state).toBe('rolled_back');
    expect(first.reason).toMatch(/did not come up/);
    expect(done.targets.filter((t: any) => t.wave === 1).map((t: any) => t.state)).toEqual(['pending', 'pending']);
    expect(done.reason).toMatch(/maxFailures 0/);
    const victim = agents.find((a) => a.id === first.agentId)!;
    expect(currentRelease(victim.root)).toBe('1.0.0');
    expect((await api.waitAgent(victim.id, 'online')).version).toBe('1.0.0');
    // It exited once to update, then the broken version failed to start until the launcher rolled back.
    expect(victim.sup.exits.filter((e) => e.code === 1).length).toBeGreaterThanOrEqual(3);
    expect(victim.sup.output()).toMatch(/rolling back to 1\.0\.0/);
    for (const a of agents) {
      if (a === victim) continue;
      expect(a.sup.starts).toBe(1);
      expect(currentRelease(a.root)).toBe('1.0.0');
    }
    const cancelled = await api.post(`/api/rollouts/${r.body.id}/cancel`);
    expect(cancelled.body.state).toBe('cancelled');
    const after = await api.get(`/api/rollouts/${r.body.id}`);
    expect(after.body.targets.filter((t: any) => t.wave === 1).map((t: any) => t.state)).toEqual(['skipped', 'skipped']);
  });

  it('lets a running script finish before switching to the new version', async () => {
    const a = await installed('upd-drain', { case: 'drain' });
    const task = await api.post('/api/tasks', { script: 'sleep 4; echo finished-before-update', interpreter: 'sh', targets: { agentIds: [a.id] } });
    expect(task.status, JSON.stringify(task.body)).toBe(201);
    await waitFor(async () => (await api.get(`/api/tasks/${task.body.id}`)).body.executions?.[0]?.status === 'running', 'script running');
    const r = await api.post('/api/rollouts', { artifactId: artifact.good.id, selector: 'labels.case == "drain"' });
    expect((await rolloutDone(r.body.id)).state).toBe('succeeded');
    const exec = (await api.get(`/api/tasks/${task.body.id}`)).body.executions[0];
    expect(exec).toMatchObject({ status: 'succeeded', exitCode: 0 });
    const out = await api.get(`/api/executions/${exec.id}/output`);
    expect(JSON.stringify(out.body)).toContain('finished-before-update');
    expect((await api.waitAgent(a.id, 'online')).version).toBe('1.1.0');
  });
});
