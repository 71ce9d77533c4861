/**
 * Killing the agent (SIGKILL) at each step of a self-update still leaves a working agent on the
 * old or the new version, and the rollout target ends in a state that says which. Also: a
 * target that never comes back is failed after updateTimeoutSec.
 */
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
  signPackage,
  stopAllSupervisors,
  supervise,
  type Supervisor,
} from '../helpers/agent-packages.js';
import { AGENT_START_MS, Api, cleanup, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

let keys: { priv: string; pub: string };
let base = '';
let good = '';

async function setup(server: TestServer): Promise<{ api: Api; artifactId: string }> {
  trackBigDir(server.dataDir);
  const api = await Api.login(server.url);
  const sig = await signPackage(keys.priv, good);
  const r = await api.req(
    'POST',
    `/api/artifacts?filename=${path.basename(good)}&signature=${encodeURIComponent(sig)}`,
    new Uint8Array(fs.readFileSync(good)),
    { 'content-type': 'application/octet-stream' },
  );
  expect(r.status).toBe(201);
  return { api, artifactId: r.body.id };
}

async function installed(
  server: TestServer,
  api: Api,
  name: string,
  env: Record<string, string>,
): Promise<{ root: string; id: string; sup: Supervisor; exited: Promise<void> }> {
  const root = bigTmpDir(`root-${name}`);
  await installAgent(root, [
    '--server',
    server.wsUrl,
    '--token',
    server.enrollToken,
    '--package',
    base,
    '--name',
    name,
    '--public-key',
    keys.pub,
    '--label',
    `case=${name}`,
  ]);
  const sup = supervise(root, env);
  const idFile = path.join(installPaths(root).state, 'agent-id');
  const id = await waitFor(() => (fs.existsSync(idFile) ? fs.readFileSync(idFile, 'utf8').trim() : ''), `${name} id`, AGENT_START_MS);
  await api.waitAgent(id, 'online');
  const proc = sup.proc!;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return { root, id, sup, exited };
}

beforeAll(async () => {
  const out = bigTmpDir('pkgs');
  [base, good] = await Promise.all([buildPackage('1.0.0', out), buildPackage('1.1.0', out)]);
  keys = await keygen(tmpDir('keys'));
}, 240_000);

afterAll(async () => {
  await stopAllSupervisors();
  await cleanup();
});

describe('killed mid-update', () => {
  // Where the agent SIGKILLs itself (fault injection), and where it must end up.
  const steps = [
    { step: 'downloading', state: 'failed', version: '1.0.0' },
    { step: 'verifying', state: 'failed', version: '1.0.0' },
    { step: 'installing', state: 'failed', version: '1.0.0' },
    { step: 'marker', state: 'failed', version: '1.0.0' },
    { step: 'swapped', state: 'succeeded', version: '1.1.0' },
  ] as const;

  it('leaves a working old or new version at every step', async () => {
    const server = await startServer({ env: { MUSTER_UPDATE_TIMEOUT_SEC: '90' } });
    const { api, artifactId } = await setup(server);
    const agents = await Promise.all(steps.map((s) => installed(server, api, `crash-${s.step}`, { MUSTER_AGENT_TEST_UPDATE_CRASH_AT: s.step })));
    const r = await api.post('/api/rollouts', { artifactId, selector: 'labels.case ~ "crash-*"', maxFailures: 10 });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const done = await waitFor(
      async () => {
        const v = (await api.get(`/api/rollouts/${r.body.id}`)).body;
        return v.state === 'failed' || v.state === 'succeeded' ? v : null;
      },
      'rollout finished',
      90_000,
      250,
    );
    for (const [i, s] of steps.entries()) {
      const a = agents[i]!;
      const t = done.targets.find((x: any) => x.agentId === a.id);
      expect(t.state, `${s.step}: ${t.reason}`).toBe(s.state);
      // It was killed (a signal), restarted by the supervisor, and runs a complete release.
      expect(
        a.sup.exits.some((e) => e.signal === 'SIGKILL'),
        s.step,
      ).toBe(true);
      expect((await api.waitAgent(a.id, 'online')).version, s.step).toBe(s.version);
      expect(currentRelease(a.root)).toBe(s.version);
      const p = installPaths(a.root);
      const v = await run(path.join(p.current, 'bin', 'muster-agent'), ['--version']);
      expect(v.stdout.trim()).toBe(s.version);
      expect(fs.existsSync(path.join(p.state, 'update-marker')), s.step).toBe(false);
    }
    expect(done.targets.find((x: any) => x.agentId === agents[3]!.id).reason).toMatch(/interrupted before the switch/);
  }, 150_000);
});

describe('update timeout', () => {
  it('fails a target that does not come back with the new version in time', async () => {
    const server = await startServer({ env: { MUSTER_UPDATE_TIMEOUT_SEC: '3' } });
    const { api, artifactId } = await setup(server);
    const a = await installed(server, api, 'gone', {});
    // The agent installs and exits to restart; its "systemd" does not start it again.
    a.sup.holdRestarts();
    const r = await api.post('/api/rollouts', { artifactId, selector: 'labels.case == "gone"' });
    await a.exited;
    const done = await waitFor(
      async () => {
        const v = (await api.get(`/api/rollouts/${r.body.id}`)).body;
        return v.state === 'paused' ? v : null;
      },
      'rollout paused by the timeout',
      30_000,
      250,
    );
    expect(done.targets[0].state).toBe('failed');
    expect(done.targets[0].reason).toMatch(/not back with version 1\.1\.0 within 3 s/);
  }, 90_000);
});

describe('new version that cannot reach the server', () => {
  it('exits unconfirmed until the launcher rolls back; the old version reports rolled_back', async () => {
    let server = await startServer({ env: { MUSTER_UPDATE_TIMEOUT_SEC: '120' } });
    const { api, artifactId } = await setup(server);
    const a = await installed(server, api, 'lonely', { MUSTER_AGENT_UPDATE_CONFIRM_SEC: '2' });
    a.sup.holdRestarts();
    const r = await api.post('/api/rollouts', { artifactId, selector: 'labels.case == "lonely"' });
    await a.exited; // installed, swapped, exited for the restart
    expect(currentRelease(a.root)).toBe('1.1.0');
    await server.stop();
    a.sup.resumeRestarts();
    // 1.1.0 starts, is never welcomed, exits 1 after 2 s; after 3 such starts the launcher swaps back.
    await waitFor(() => currentRelease(a.root) === '1.0.0', 'rollback to 1.0.0', 60_000, 200);
    expect(a.sup.exits.filter((e) => e.code === 1).length).toBeGreaterThanOrEqual(3);
    server = await server.restart();
    const api2 = await Api.login(server.url);
    const done = await waitFor(
      async () => {
        const v = (await api2.get(`/api/rollouts/${r.body.id}`)).body;
        return v.targets[0].state === 'rolled_back' ? v : null;
      },
      'rolled_back reported after the server came back',
      30_000,
      250,
    );
    expect(done.state).toBe('paused');
    expect((await api2.waitAgent(a.id, 'online')).version).toBe('1.0.0');
    expect(fs.existsSync(path.join(installPaths(a.root).state, 'update-marker'))).toBe(false);
  }, 120_000);
});
