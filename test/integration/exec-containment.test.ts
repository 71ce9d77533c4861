/**
 * Execution cgroups on a host without systemd (this machine: a writable cgroup v2 or v1
 * hierarchy): nothing accumulates. Every finished execution's cgroup is removed, the agent's own
 * directory goes with its last execution, and what a killed agent left is removed (not only
 * killed) when it comes back. The same under systemd (scopes) is in systemd.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { alive, createTask, pidsIn, waitExecution, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, startAgent, startServer, tmpDir, waitFor } from '../helpers/harness.js';

/** The cgroup directory an execution ran in, or null when this host gave it none. */
function cgroupOf(e: { containment?: string | null }): string | null {
  const m = /^cgroup[12]:(.*)$/.exec(e.containment ?? '');
  return m ? m[1]! : null;
}

describe('execution cgroups', () => {
  afterAll(cleanup);

  it('are removed when executions finish, and the agent directory with the last one', async (t) => {
    const s = await startServer();
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'cg-finish' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    // Short scripts, some leaving a background child the agent has to kill after the drain.
    const tasks = [];
    for (let i = 0; i < 8; i++) {
      tasks.push(await createTask(api, { script: i % 2 ? 'echo hi' : 'sleep 30 & echo bg', targets: { agentIds: [id] } }));
    }
    const dirs: string[] = [];
    for (const task of tasks) {
      const d = await waitTask(api, task.id);
      const e = d.executions[0];
      expect(e.status).toBe('succeeded');
      const dir = cgroupOf(e);
      if (!dir) {
        console.warn(`SKIPPED: this host gave executions no cgroup (${e.containment})`);
        t.skip();
        return;
      }
      dirs.push(dir);
    }
    for (const dir of dirs) await waitFor(() => !fs.existsSync(dir), `cgroup ${dir} removed`, 15_000);
    const agentDir = path.dirname(dirs[0]!);
    expect(path.basename(agentDir)).toBe(id);
    await waitFor(() => !fs.existsSync(agentDir), `the agent's cgroup directory ${agentDir} removed`, 15_000);
  });

  it('left by a killed agent are emptied and removed when it comes back', async (t) => {
    const s = await startServer();
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'cg-killed' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const pidFile = path.join(tmpDir('cg-killed'), 'pids');
    const task = await createTask(api, {
      script: 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; setsid sleep 301 & echo $! >> "$1"; wait',
      args: [pidFile],
      targets: { agentIds: [id] },
    });
    const e = await waitExecution(api, task.id, (x) => x.status === 'running' && x.containment, 'running');
    const dir = cgroupOf(e);
    if (!dir) {
      console.warn(`SKIPPED: this host gave executions no cgroup (${e.containment})`);
      t.skip();
      return;
    }
    await waitFor(() => pidsIn(pidFile).length >= 3, 'script pids');
    await a.stop('SIGKILL');
    expect(fs.existsSync(dir)).toBe(true);
    const b = startAgent(s, { name: 'cg-killed', stateDir: a.stateDir });
    await api.waitAgent(id, 'online');
    await waitFor(() => pidsIn(pidFile).every((p) => !alive(p)), 'orphans killed', 10_000);
    // Removed by the sweep at start, not left for good.
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.existsSync(path.dirname(dir))).toBe(false);
    expect(b.output()).toMatch(/killed processes left by executions of a previous agent run/);
  });
});
