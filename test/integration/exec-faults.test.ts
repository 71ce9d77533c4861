import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { alive, createTask, outputText, pidsIn, waitExecution, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, databases, sleep, startAgent, startServer, tmpDir, waitFor } from '../helpers/harness.js';
import { startProxy } from '../helpers/tcp-proxy.js';

const dbs = await databases();

/** A script that records its pids (itself, a background sleep, a setsid sleep) and then waits. */
const TREE = 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; setsid sleep 301 & echo $! >> "$1"; echo started; wait';

describe.each(dbs)('exec faults (%s)', (db) => {
  afterAll(cleanup);

  it('a timeout kills the whole tree (background and setsid children) and reports timeout', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-timeout', env: { MUSTER_AGENT_EXEC_KILL_GRACE_SEC: '1' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const pidFile = path.join(tmpDir('timeout'), 'pids');
    // The script ignores SIGTERM, so the SIGKILL after the grace period is what ends it.
    const t = await createTask(api, { script: `trap '' TERM\n${TREE}`, args: [pidFile], timeoutSec: 2, targets: { agentIds: [id] } });
    await waitFor(() => pidsIn(pidFile).length >= 3, 'script pids');
    const pids = pidsIn(pidFile);
    expect(pids.every(alive)).toBe(true);
    const d = await waitTask(api, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('timeout');
    expect(e.signal).toBe('SIGKILL');
    expect(await outputText(api, e.id)).toBe('started\n');
    await waitFor(() => pids.every((p) => !alive(p)), 'no process of the timed-out script left', 10_000);
    // It ran in its own cgroup (these hosts allow one without systemd), and that cgroup is gone too.
    expect(e.containment).toMatch(/^(cgroup2|cgroup1|systemd):/);
    const m = /^cgroup[12]:(.*)$/.exec(e.containment);
    if (m) {
      expect(m[1]).toContain(e.id);
      await waitFor(() => !fs.existsSync(m[1]!), 'cgroup removed', 5000);
    }
  });

  it('an agent killed mid-run gives lost (and its orphans are killed when it comes back)', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-killed' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const pidFile = path.join(tmpDir('killed'), 'pids');
    const t = await createTask(api, { script: TREE, args: [pidFile], targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    await waitFor(() => pidsIn(pidFile).length >= 3, 'script pids');
    await a.stop('SIGKILL');
    const b = startAgent(s, { name: 'f-killed', stateDir: a.stateDir });
    const d = await waitTask(api, t.id);
    expect(d.executions[0].status).toBe('lost');
    expect(d.executions[0].reason).toMatch(/did not report/);
    await waitFor(() => pidsIn(pidFile).every((p) => !alive(p)), 'orphans of the killed agent gone', 10_000);
    expect(b.output()).toMatch(/killed processes left by executions of a previous agent run/);
  });

  it('an agent that never comes back: running executions become lost after reconcileTimeoutSec', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-gone' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const t = await createTask(api, { script: 'sleep 30', targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    await a.stop('SIGKILL');
    const d = await waitTask(api, t.id, 20_000);
    expect(d.executions[0].status).toBe('lost');
    expect(d.executions[0].reason).toMatch(/did not come back/);
  });

  it('connection cut for a few seconds mid-run (TCP proxy): one run only, full output', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'f-proxy', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const runs = path.join(tmpDir('proxy'), 'runs');
    const t = await createTask(api, {
      script: 'echo run >> "$1"; for i in $(seq 1 60); do echo "line $i"; echo "e$i" >&2; sleep 0.1; done',
      args: [runs],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    await sleep(1000);
    proxy.cut();
    await api.waitAgent(id, 'offline');
    await sleep(3000);
    proxy.restore();
    await api.waitAgent(id, 'online');
    const d = await waitTask(api, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('succeeded');
    expect(e.truncated).toBe(false);
    expect(fs.readFileSync(runs, 'utf8')).toBe('run\n');
    const want = Array.from({ length: 60 }, (_, i) => `line ${i + 1}\n`).join('');
    expect(await outputText(api, e.id, 'stdout')).toBe(want);
    expect(await outputText(api, e.id, 'stderr')).toBe(Array.from({ length: 60 }, (_, i) => `e${i + 1}\n`).join(''));
    await proxy.close();
  });

  it('output produced while disconnected is kept up to the agent buffer, then cut and marked truncated', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'f-cut', serverUrl: `ws://127.0.0.1:${proxy.port}`, env: { MUSTER_AGENT_EXEC_BUFFER_BYTES: '65536' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const dir = tmpDir('cut');
    const gate = path.join(dir, 'gate');
    const done = path.join(dir, 'done');
    const t = await createTask(api, {
      script: 'while [ ! -e "$1" ]; do sleep 0.05; done; head -c 1000000 /dev/zero | tr "\\0" z; echo done > "$2"',
      args: [gate, done],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    proxy.cut();
    await api.waitAgent(id, 'offline');
    fs.writeFileSync(gate, '');
    await waitFor(() => fs.existsSync(done), 'script done while disconnected');
    await sleep(300);
    proxy.restore();
    const d = await waitTask(api, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('succeeded');
    expect(e.truncated).toBe(true);
    expect(e.reason).toMatch(/output truncated/); // lost output is said, with why
    expect(e.outputBytes).toBe(65536);
    expect(await outputText(api, e.id)).toBe('z'.repeat(65536));
    expect(a.output()).toMatch(/cutting output/);
    await proxy.close();
  });

  it('a backed-up socket pauses the script (its pipes), agent memory stays bounded, nothing is lost', async () => {
    const s = await startServer({ db, env: { MUSTER_MAX_OUTPUT_BYTES: String(128 << 20) } });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'f-stall', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const rss = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${a.proc.pid}/status`, 'utf8'))![1]) * 1024;
    const dir = tmpDir('stall');
    const progress = path.join(dir, 'progress');
    const gate = path.join(dir, 'gate');
    // 400 blocks of 250 KB = 100 MB, recording progress after each block.
    const t = await createTask(api, {
      script: 'while [ ! -e "$2" ]; do sleep 0.05; done; for i in $(seq 1 400); do head -c 250000 /dev/zero | tr "\\0" p; echo $i > "$1"; done',
      args: [progress, gate],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    const rss0 = rss();
    proxy.stall();
    fs.writeFileSync(gate, '');
    // The script is blocked on its pipe: its progress stops while the socket is backed up. How soon
    // the buffers on the way fill depends on the machine's load, so wait for a 1.5 s window
    // without progress rather than assume one.
    const readProgress = () => Number(fs.readFileSync(progress, 'utf8'));
    const p2 = await waitFor(
      async () => {
        const p1 = readProgress();
        await sleep(1500);
        return readProgress() === p1 ? p1 : 0;
      },
      'the script blocked on its pipe',
      60_000,
      0,
    );
    expect(p2).toBeLessThan(400);
    expect(rss() - rss0).toBeLessThan(64 << 20);
    proxy.unstall();
    const d = await waitTask(api, t.id, 60_000);
    const e = d.executions[0];
    expect(e.status).toBe('succeeded');
    expect(e.truncated).toBe(false);
    expect(e.outputBytes).toBe(100_000_000);
    await proxy.close();
  });

  it('cancel while the agent is disconnected: cancelled at once, and the script is killed when the agent returns', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'f-cancel-off', serverUrl: `ws://127.0.0.1:${proxy.port}`, env: { MUSTER_AGENT_EXEC_KILL_GRACE_SEC: '1' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const pidFile = path.join(tmpDir('cancel-off'), 'pids');
    const t = await createTask(api, { script: TREE, args: [pidFile], targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    await waitFor(() => pidsIn(pidFile).length >= 3, 'script pids');
    proxy.cut();
    await api.waitAgent(id, 'offline');
    const c = await api.post(`/api/tasks/${t.id}/cancel`, {});
    expect(c.status).toBe(200);
    const d = await waitTask(api, t.id);
    expect(d.executions[0].status).toBe('cancelled');
    expect(d.executions[0].reason).toMatch(/agent offline/);
    expect(pidsIn(pidFile).every(alive)).toBe(true); // the agent has not heard of it yet
    proxy.restore();
    await api.waitAgent(id, 'online');
    await waitFor(() => pidsIn(pidFile).every((p) => !alive(p)), 'the script killed after the reconnect', 15_000);
    await waitFor(() => /"status":"cancelled"/.test(a.output()), 'agent reports the cancelled run', 10_000);
    expect((await api.get(`/api/tasks/${t.id}`)).body.executions[0].status).toBe('cancelled');
    await proxy.close();
  });

  it('a server restart mid-run still records the result and the whole output', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-restart' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const runs = path.join(tmpDir('restart'), 'runs');
    const t = await createTask(api, {
      script: 'echo run >> "$1"; for i in $(seq 1 40); do echo "line $i"; sleep 0.1; done; exit 4',
      args: [runs],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    await sleep(800);
    await s.kill();
    await sleep(1500);
    const s2 = await s.restart();
    const api2 = await Api.login(s2.url);
    const d = await waitTask(api2, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('failed');
    expect(e.exitCode).toBe(4);
    expect(fs.readFileSync(runs, 'utf8')).toBe('run\n');
    expect(await outputText(api2, e.id)).toBe(Array.from({ length: 40 }, (_, i) => `line ${i + 1}\n`).join(''));
  });

  it('a server restart with the agent gone: the execution becomes lost after reconcileTimeoutSec', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-restart-gone' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const t = await createTask(api, { script: 'sleep 60', targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running');
    await s.kill();
    await a.stop('SIGKILL');
    const s2 = await s.restart();
    const api2 = await Api.login(s2.url);
    const d = await waitTask(api2, t.id, 20_000);
    expect(d.executions[0].status).toBe('lost');
  });

  it('an agent that goes away before its turn (concurrency window) is skipped after reconcileTimeoutSec', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-turn-1' });
    const b = startAgent(s, { name: 'f-turn-2' });
    const [ia, ib] = [await agentId(a), await agentId(b)];
    await api.waitAgent(ia, 'online');
    await api.waitAgent(ib, 'online');
    const t = await createTask(api, { script: 'sleep 4', targets: { agentIds: [ia, ib] }, concurrency: 1 });
    const first = await waitExecution(api, t.id, (e) => e.status === 'running', 'first running');
    const other = first.agentId === ia ? b : a;
    await other.stop('SIGKILL');
    const d = await waitTask(api, t.id);
    const waiting = d.executions.find((e: any) => e.agentId !== first.agentId);
    expect(waiting.status).toBe('skipped');
    expect(waiting.reason).toMatch(/before its turn/);
    expect(d.executions.find((e: any) => e.agentId === first.agentId).status).toBe('succeeded');
  });

  it('a queued execution runs once when its agent comes back; past the TTL it is skipped', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'f-queue' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    await a.stop();
    await api.waitAgent(id, 'offline');
    const runs = path.join(tmpDir('queue'), 'runs');
    const t = await createTask(api, {
      script: 'echo run >> "$1"; echo queued-ok',
      args: [runs],
      targets: { agentIds: [id] },
      offline: 'queue',
      queueTtlSec: 120,
    });
    expect(t.executions[0].status).toBe('pending');
    const short = await createTask(api, { script: 'echo never', targets: { agentIds: [id] }, offline: 'queue', queueTtlSec: 1 });
    const sd = await waitTask(api, short.id, 15_000);
    expect(sd.executions[0].status).toBe('skipped');
    expect(sd.executions[0].reason).toMatch(/TTL/);
    await sleep(500);
    expect((await api.get(`/api/tasks/${t.id}`)).body.executions[0].status).toBe('pending');
    const b = startAgent(s, { name: 'f-queue', stateDir: a.stateDir });
    await api.waitAgent(id, 'online');
    const d = await waitTask(api, t.id);
    expect(d.executions[0].status).toBe('succeeded');
    expect(await outputText(api, d.executions[0].id)).toBe('queued-ok\n');
    // Reconnect once more: nothing runs again.
    await b.stop();
    startAgent(s, { name: 'f-queue', stateDir: a.stateDir });
    await api.waitAgent(id, 'online');
    await sleep(500);
    expect(fs.readFileSync(runs, 'utf8')).toBe('run\n');
  });
});
