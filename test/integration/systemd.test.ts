/**
 * The agent under a real systemd: a minimal Debian bookworm booted with systemd-nspawn (see
 * test/helpers/systemd-container.ts), the built package installed inside with
 * deployment/install-agent.sh as a user would, talking to a real server on the host's loopback.
 * One container boot is shared by the tests of this file, which run in order on one install.
 *
 * Mandatory in CI (CI=true); elsewhere skipped, loudly, when root, systemd-nspawn or debootstrap
 * are missing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigTmpDir, buildPackage, DEPLOY, keygen, removeBigDirs, signPackage, trackBigDir } from '../helpers/agent-packages.js';
import { createTask, outputText, waitExecution, waitTask } from '../helpers/exec.js';
import { Api, cleanup, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { SHARE, SystemdContainer, systemdSuiteUnavailable } from '../helpers/systemd-container.js';

const unavailable = systemdSuiteUnavailable();
if (unavailable) {
  const msg = `systemd suite: ${unavailable}`;
  if (process.env['CI'] === 'true') console.error(`${msg} — mandatory in CI, failing`);
  else console.warn(`\n!!! SKIPPED: ${msg}\n`);
}
const CI_MUST_RUN = Boolean(unavailable) && process.env['CI'] === 'true';

const UNIT = 'muster-agent.service';
const STATE = '/var/lib/muster-agent';

let c: SystemdContainer;
let server: TestServer;
let api: Api;
let keys: { priv: string; pub: string };
const pkg = { base: '', good: '', broken: '' };
let agentId = '';

/** A script that records its pids (itself, a background sleep, a setsid sleep) in $1, then waits. */
const TREE = 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; setsid sleep 301 & echo $! >> "$1"; echo started; wait';
let pidFiles = 0;

/** Runs TREE on the agent; resolves once it runs and wrote its 3 pids (container pid namespace). */
async function startTree(extra: Record<string, unknown> = {}): Promise<{ task: any; exec: any; pids: number[]; scope: string }> {
  const file = `/run/muster-test-${++pidFiles}.pids`;
  const task = await createTask(api, { script: TREE, args: [file], targets: { agentIds: [agentId] }, ...extra });
  const exec = await waitExecution(api, task.id, (e) => e.status === 'running' && e.containment, 'running with its containment', 30_000);
  const pids = await waitFor(
    async () => {
      const p = (await c.exec(['cat', file])).stdout.split('\n').filter(Boolean).map(Number);
      return p.length >= 3 ? p : null;
    },
    'script pids',
    30_000,
  );
  const m = /^systemd:(.+\.scope)$/.exec(exec.containment);
  expect(m, `containment ${exec.containment}`).not.toBeNull();
  return { task, exec, pids, scope: m![1]! };
}

/** Which of `pids` still exist inside the container. */
async function living(pids: number[]): Promise<number[]> {
  const out = await c.sh(`for p in ${pids.join(' ')}; do [ -e /proc/$p/stat ] && ! grep -q '^[0-9]* ([^)]*) Z' /proc/$p/stat && echo $p; done; true`);
  return out.split('\n').filter(Boolean).map(Number);
}

/** Pids (inside the container) in a unit's cgroup, recursively. */
async function unitPids(unit: string): Promise<number[]> {
  const out = await c.sh(
    `cg=$(systemctl show -p ControlGroup --value ${unit}); [ -n "$cg" ] && [ -d "/sys/fs/cgroup$cg" ] && find "/sys/fs/cgroup$cg" -name cgroup.procs -exec cat {} +; true`,
  );
  return out.split('\n').filter(Boolean).map(Number);
}

/** Loaded scope units of Muster executions. */
async function execScopes(): Promise<string[]> {
  const out = await c.sh("systemctl list-units --type=scope --all --plain --no-legend --full 'muster-exec-*' | awk '{print $1}'");
  return out.split('\n').filter(Boolean);
}

/** Cgroup directories left in the executions' slice, and any the agent made itself at the root. */
async function leftoverCgroups(): Promise<string[]> {
  const out = await c.sh('ls -d /sys/fs/cgroup/muster.slice/muster-exec.slice/*/ /sys/fs/cgroup/muster-exec /sys/fs/cgroup/muster-probe-* 2>/dev/null; true');
  return out.split('\n').filter(Boolean);
}

/** Uploads a signed package; returns the artifact. */
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

/** Starts a rollout to this agent and waits until its target settles. */
async function rollout(artifactId: string): Promise<any> {
  const r = await api.post('/api/rollouts', { artifactId, selector: 'labels.env == "nspawn"' });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return waitFor(
    async () => {
      const v = (await api.get(`/api/rollouts/${r.body.id}`)).body;
      return ['succeeded', 'failed', 'rolled_back'].includes(v.targets[0]?.state) ? v : null;
    },
    'rollout target settled',
    180_000,
    250,
  );
}

async function mainPid(): Promise<number> {
  return Number(await c.prop(UNIT, 'MainPID'));
}

async function journal(since = ''): Promise<string> {
  return c.sh(`journalctl -u ${UNIT} --no-pager -o cat ${since}`);
}

// Generous per-test timeouts: systemd waits RestartSec (5 s) between starts, a rollback needs three
// failed starts, and the machine may be busy with other test files.
describe.skipIf(Boolean(unavailable) && !CI_MUST_RUN)('agent under a real systemd (systemd-nspawn)', { timeout: 240_000 }, () => {
  beforeAll(async () => {
    if (CI_MUST_RUN) throw new Error(`systemd suite is mandatory in CI: ${unavailable}`);
    const out = bigTmpDir('sd-pkgs');
    const booting = SystemdContainer.boot();
    [pkg.base, pkg.good, pkg.broken] = await Promise.all([buildPackage('1.0.0', out), buildPackage('1.1.0', out), buildPackage('1.2.0', out, true)]);
    keys = await keygen(tmpDir('sd-keys'));
    c = await booting;
    console.log(`systemd suite: container running ${c.bootMs} ms after systemd-nspawn started`);
    server = await startServer({ env: { MUSTER_UPDATE_TIMEOUT_SEC: '120' } });
    trackBigDir(server.dataDir);
    api = await Api.login(server.url);
  }, 600_000);

  afterAll(async () => {
    if (c) {
      if (process.env['KEEP_TMP']) console.log(c.output());
      await c.stop();
    }
    await cleanup();
    removeBigDirs();
  }, 60_000);

  it('install-agent.sh installs and starts the unit; the agent comes online on the host server', async () => {
    const p = c.put(pkg.base);
    c.put(path.join(DEPLOY, 'install-agent.sh'));
    c.put(path.join(DEPLOY, 'uninstall-agent.sh'));
    c.put(keys.pub, 'update.pub');
    // The host's loopback is shared: a fixed health port could collide with the host's, so pick
    // a free one, the way an operator tunes a unit (a drop-in).
    await c.sh(
      `mkdir -p /etc/systemd/system/${UNIT}.d && printf '[Service]\\nEnvironment=MUSTER_AGENT_HEALTH_PORT=0\\n' > /etc/systemd/system/${UNIT}.d/test.conf`,
    );
    const out = await c.sh(
      `bash ${SHARE}/install-agent.sh --server ${server.wsUrl} --token ${server.enrollToken} --package ${p} --name sd-host --label env=nspawn --public-key ${SHARE}/update.pub`,
    );
    expect(out).toMatch(/muster-agent\.service enabled and started/);
    agentId = await waitFor(async () => (await c.exec(['cat', `${STATE}/agent-id`])).stdout.trim(), 'agent id in the container', 30_000);
    const a = await api.waitAgent(agentId, 'online', 60_000);
    expect(a).toMatchObject({ name: 'sd-host', version: '1.0.0', labels: { env: 'nspawn' } });
    expect(await c.prop(UNIT, 'ActiveState')).toBe('active');
    expect(await c.prop(UNIT, 'UnitFileState')).toBe('enabled');
    // The launcher exec'd the agent: the unit's main process is the packaged node running the bundle.
    const pid = await mainPid();
    expect(await c.sh(`cat /proc/${pid}/cmdline | tr '\\0' ' '`)).toMatch(
      /^\/opt\/muster-agent\/releases\/1\.0\.0\/node\/bin\/node .*lib\/agent\.js --config \/etc\/muster-agent\/agent\.json/,
    );
    // The unit file passes systemd's own check, and its properties are as shipped (limits are
    // accepted, not enforced in this container).
    const verify = await c.exec(['systemd-analyze', 'verify', `/etc/systemd/system/${UNIT}`]);
    expect(verify, verify.stderr).toMatchObject({ code: 0, stderr: '' });
    expect(await c.prop(UNIT, 'Restart')).toBe('always');
    expect(await c.prop(UNIT, 'KillMode')).toBe('mixed');
    expect(await c.prop(UNIT, 'MemoryMax')).toBe(String(2 * 1024 ** 3));
    expect(await c.prop(UNIT, 'TasksMax')).toBe('4096');
    expect(await c.prop(UNIT, 'CPUQuotaPerSecUSec')).toBe('2s');
    expect(await c.prop(UNIT, 'LimitNOFILE')).toBe('65536');
  });

  it('kill -9 of the agent: systemd restarts it (NRestarts grows) and it comes back online', async () => {
    const before = Number(await c.prop(UNIT, 'NRestarts'));
    const pid = await mainPid();
    const t0 = Date.now();
    await c.sh(`kill -9 ${pid}`);
    await api.waitAgent(agentId, 'offline', 30_000);
    await waitFor(async () => Number(await c.prop(UNIT, 'NRestarts')) > before, 'NRestarts to grow', 60_000, 200);
    await api.waitAgent(agentId, 'online', 60_000);
    console.log(`systemd suite: back online ${Date.now() - t0} ms after kill -9 (RestartSec=${await c.prop(UNIT, 'RestartUSec')})`);
    const now = await mainPid();
    expect(now).not.toBe(pid);
    expect(Number(await c.prop(UNIT, 'NRestarts'))).toBe(before + 1);
    expect(await c.prop(UNIT, 'ActiveState')).toBe('active');
  });

  it("the agent's JSON log lines are in the journal (journalctl -u muster-agent)", async () => {
    const lines = (await journal()).split('\n').filter((l) => l.startsWith('{'));
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const starts = parsed.filter((o) => o['msg'] === 'agent starting' && o['agentId'] === agentId);
    expect(starts.length).toBeGreaterThanOrEqual(2); // the first start and the restart after kill -9
    expect(parsed.every((o) => o['svc'] === 'muster-agent' && typeof o['level'] === 'string' && typeof o['time'] === 'string')).toBe(true);
    // Under its syslog identifier too, and nothing secret in it.
    const ids = await c.sh(`journalctl -u ${UNIT} --no-pager -o json --output-fields=SYSLOG_IDENTIFIER | head -n 50`);
    expect(ids).toMatch(/"SYSLOG_IDENTIFIER":"muster-agent"/);
    const all = await journal();
    expect(all).not.toContain(server.enrollToken);
  });

  it('a script runs in its own transient scope; cancel and timeout stop the whole scope', async () => {
    const t = await startTree();
    expect(t.scope).toBe(`muster-exec-${agentId}-${t.exec.id}.scope`);
    expect(await c.prop(t.scope, 'ActiveState')).toBe('active');
    expect(await c.prop(t.scope, 'Slice')).toBe('muster-exec.slice');
    expect(await c.prop(t.scope, 'CollectMode')).toBe('inactive-or-failed');
    const cg = await c.prop(t.scope, 'ControlGroup');
    expect(cg).toBe(`/muster.slice/muster-exec.slice/${t.scope}`);
    // Every process of the script, the setsid one included, is in the scope, none in the agent's unit.
    for (const p of t.pids) expect((await c.sh(`grep '^0::' /proc/${p}/cgroup`)).trim()).toBe(`0::${cg}`);
    const inUnit = await unitPids(UNIT);
    expect(inUnit).toContain(await mainPid());
    expect(inUnit.filter((p) => t.pids.includes(p))).toEqual([]);

    expect((await api.post(`/api/tasks/${t.task.id}/cancel`)).status).toBe(200);
    const done = await waitTask(api, t.task.id, 60_000);
    expect(done.executions[0].status).toBe('cancelled');
    await waitFor(async () => (await living(t.pids)).length === 0, 'every process of the cancelled script gone', 30_000);
    await waitFor(async () => !(await execScopes()).includes(t.scope), 'the cancelled scope gone', 30_000);

    // Timeout: the script ignores SIGTERM, so the SIGKILL after the grace period ends the scope.
    const u = await startTree({ timeoutSec: 2, script: `trap '' TERM\n${TREE}` });
    const timedOut = await waitTask(api, u.task.id, 60_000);
    expect(timedOut.executions[0].status).toBe('timeout');
    await waitFor(async () => (await living(u.pids)).length === 0, 'every process of the timed-out script gone', 30_000);
    await waitFor(async () => !(await execScopes()).includes(u.scope), 'the timed-out scope gone', 30_000);

    // A script that ends by itself: its scope goes too, and no cgroup directory accumulates.
    const ok = await createTask(api, { script: 'sleep 60 & setsid sleep 61 & echo done', targets: { agentIds: [agentId] } });
    expect((await waitTask(api, ok.id, 60_000)).executions[0].status).toBe('succeeded');
    await waitFor(async () => (await execScopes()).length === 0, 'no execution scope left', 30_000);
    await waitFor(async () => (await leftoverCgroups()).length === 0, 'no execution cgroup directory left', 30_000);
  });

  it("a crashed agent's scopes are stopped by the next start (defect 8)", async () => {
    const t = await startTree();
    const before = Number(await c.prop(UNIT, 'NRestarts'));
    await c.sh(`kill -9 ${await mainPid()}`);
    // The scope is outside the unit: the agent's death does not touch it (checked at once, well
    // within RestartSec, before the next agent starts)...
    expect(await c.prop(t.scope, 'ActiveState')).toBe('active');
    expect(await living(t.pids)).toEqual(t.pids);
    await api.waitAgent(agentId, 'offline', 30_000);
    // ...the restarted agent stops it by name.
    await waitFor(async () => Number(await c.prop(UNIT, 'NRestarts')) > before, 'restart', 60_000, 200);
    await api.waitAgent(agentId, 'online', 60_000);
    await waitFor(async () => (await living(t.pids)).length === 0, "the crashed agent's script processes gone", 30_000);
    await waitFor(async () => (await execScopes()).length === 0, 'its scope gone', 30_000);
    expect(await journal()).toMatch(
      new RegExp(`stopped execution scopes left by a previous agent run.*${t.scope}|${t.scope}.*stopped execution scopes left by a previous agent run`),
    );
    expect((await waitTask(api, t.task.id, 60_000)).executions[0].status).toBe('lost');
    await waitFor(async () => (await leftoverCgroups()).length === 0, 'no execution cgroup directory left', 30_000);
  });

  it('systemctl stop during a running script: it is recorded cancelled (agent stopping), nothing of the unit or the scope remains', async () => {
    const t = await startTree();
    const agentPid = await mainPid();
    const t0 = Date.now();
    // The agent gives running scripts execStopDrainSec to finish, then cancels them, reports the
    // results and exits, all within TimeoutStopSec.
    await c.sh(`systemctl stop ${UNIT}`);
    console.log(`systemd suite: systemctl stop with a running script took ${Date.now() - t0} ms`);
    expect(await c.prop(UNIT, 'ActiveState')).toBe('inactive');
    expect(await c.prop(UNIT, 'Result')).toBe('success'); // not killed at TimeoutStopSec
    expect(await unitPids(UNIT)).toEqual([]);
    expect(await living([agentPid, ...t.pids])).toEqual([]);
    expect(await execScopes()).toEqual([]);
    expect(await journal()).toMatch(/"reason":"SIGTERM".*"msg":"agent stopped"/);
    // Recorded before the agent exited, with the output so far: no restart needed to learn it.
    const e = (await waitTask(api, t.task.id, 30_000)).executions[0];
    expect(e.status).toBe('cancelled');
    expect(e.reason).toMatch(/agent stopping/);
    expect(await outputText(api, e.id)).toBe('started\n');
    await c.sh(`systemctl start ${UNIT}`);
    await api.waitAgent(agentId, 'online', 60_000);
    await waitFor(async () => (await leftoverCgroups()).length === 0, 'no execution cgroup directory left', 30_000);
  });

  it('self-update to a good signed package under systemd succeeds', async () => {
    const art = await upload(pkg.good);
    const restarts = Number(await c.prop(UNIT, 'NRestarts'));
    const t0 = Date.now();
    const done = await rollout(art.id);
    expect(done.targets[0].state, done.targets[0].reason).toBe('succeeded');
    console.log(`systemd suite: self-update 1.0.0 -> 1.1.0 succeeded in ${Date.now() - t0} ms`);
    expect((await api.waitAgent(agentId, 'online', 60_000)).version).toBe('1.1.0');
    expect((await c.sh('readlink /opt/muster-agent/current')).trim()).toBe('releases/1.1.0');
    // The agent exited after the swap and systemd started the launcher again, which ran 1.1.0.
    expect(Number(await c.prop(UNIT, 'NRestarts'))).toBeGreaterThan(restarts);
    expect(await c.sh(`cat /proc/${await mainPid()}/cmdline | tr '\\0' ' '`)).toMatch(/^\/opt\/muster-agent\/releases\/1\.1\.0\/node\/bin\/node /);
    expect((await c.exec(['test', '-e', `${STATE}/update-marker`])).code).not.toBe(0);
  });

  it('a package whose agent fails at start is rolled back by the launcher under systemd; the server sees rolled_back', async () => {
    const art = await upload(pkg.broken);
    const t0 = Date.now();
    const done = await rollout(art.id);
    expect(done.targets[0].state, done.targets[0].reason).toBe('rolled_back');
    expect(done.targets[0].reason).toMatch(/did not come up/);
    console.log(`systemd suite: broken 1.2.0 rolled back to 1.1.0 in ${Date.now() - t0} ms`);
    expect((await api.waitAgent(agentId, 'online', 60_000)).version).toBe('1.1.0');
    expect((await c.sh('readlink /opt/muster-agent/current')).trim()).toBe('releases/1.1.0');
    const log = await journal();
    expect(log).toMatch(/muster-agent-launcher: starting new version 1\.2\.0 \(attempt 3 of 3\)/);
    expect(log).toMatch(/muster-agent-launcher: version 1\.2\.0 did not come up after 3 starts; rolling back to 1\.1\.0/);
    expect(log).toMatch(/deliberately broken/);
    // systemd kept restarting through the failures: the start limit was not hit.
    expect(await c.prop(UNIT, 'ActiveState')).toBe('active');
  });

  it('uninstall-agent.sh leaves no unit, process or scope behind', async () => {
    // A script left by an agent that crashed just before the uninstall, and one of the running agent.
    const orphan = await startTree();
    await c.sh(`kill -9 ${await mainPid()}`);
    await api.waitAgent(agentId, 'offline', 30_000);
    const out = await c.sh(`bash ${SHARE}/uninstall-agent.sh --purge`);
    expect(out).toMatch(/removed the agent, its config and its state/);
    expect(await c.prop(UNIT, 'LoadState')).toBe('not-found');
    expect(await c.sh('ls /etc/systemd/system /etc/systemd/system/multi-user.target.wants')).not.toMatch(/muster/);
    expect(await unitPids(UNIT)).toEqual([]);
    expect(await living(orphan.pids)).toEqual([]);
    expect(await execScopes()).toEqual([]);
    // (muster\x2dtest.mount is this test's bind mount.)
    expect(await c.sh("systemctl list-units --all --plain --no-legend --full 'muster*' | awk '{print $1}' | grep -v '[.]mount$'; true")).toBe('');
    expect(await c.sh('ps -eo pid=,args= | grep -E "muster|sleep 30[01]" | grep -v grep; true')).toBe('');
    expect(await leftoverCgroups()).toEqual([]);
    for (const p of ['/opt/muster-agent', '/etc/muster-agent', STATE]) expect((await c.exec(['test', '-e', p])).code, p).not.toBe(0);
  });
});
