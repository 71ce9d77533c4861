/**
 * /metrics describes the work: executions, tasks, output, terminals, rollouts, and the agents'
 * links (heartbeat round trip, connection duration, status changes). Driven by real agents; each
 * metric is read before and after the work that should move it. Label sets stay bounded: no
 * agent, task or session id appears in any label.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTask, waitTask } from '../helpers/exec.js';
import { agentId, Api, cleanup, ROOT, startAgent, startServer, tmpDir, waitFor, type TestAgent, type TestServer } from '../helpers/harness.js';
import { helloAgent, sampleMetrics } from '../helpers/raw-agent.js';
import { TermClient } from '../helpers/terminal-client.js';

/** Value of one sample, `name{a="x",b="y"}` (labels in any order); 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(m[3]);
  }
  return 0;
}

describe('work metrics on /metrics', () => {
  let s: TestServer;
  let api: Api;
  let a: TestAgent;
  let id: string;
  const scrape = async (): Promise<string> => (await fetch(`${s.url}/metrics`)).text();

  beforeAll(async () => {
    s = await startServer({ env: { MUSTER_AGENT_PING_INTERVAL_MS: '200', MUSTER_HEARTBEAT_INTERVAL_MS: '500' } });
    api = await Api.login(s.url);
    a = startAgent(s, { name: 'm-1' });
    id = await agentId(a);
    await api.waitAgent(id, 'online');
  });
  afterAll(cleanup);

  it('executions by final state, durations, dispatch latency, output bytes, tasks', async () => {
    const before = await scrape();
    await waitTask(api, (await createTask(api, { script: 'echo hello; echo oops >&2', targets: { agentIds: [id] } })).id);
    await waitTask(api, (await createTask(api, { script: 'exit 4', targets: { agentIds: [id] } })).id);
    const after = await waitFor(async () => {
      const t = await scrape();
      return sample(t, 'muster_tasks_finished_total', { state: 'failed' }) > sample(before, 'muster_tasks_finished_total', { state: 'failed' }) ? t : null;
    }, 'task metrics');
    const d = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
    expect(d('muster_executions_total', { state: 'succeeded' })).toBe(1);
    expect(d('muster_executions_total', { state: 'failed' })).toBe(1);
    expect(d('muster_execution_duration_seconds_count', { state: 'succeeded' })).toBe(1);
    expect(d('muster_execution_dispatch_latency_seconds_count')).toBe(2);
    expect(d('muster_execution_output_bytes_total', { stream: 'stdout' })).toBe(6);
    expect(d('muster_execution_output_bytes_total', { stream: 'stderr' })).toBe(5);
    expect(d('muster_tasks_finished_total', { state: 'succeeded' })).toBe(1);
    expect(d('muster_tasks_finished_total', { state: 'failed' })).toBe(1);
    expect(sample(after, 'muster_tasks_running')).toBe(0);
  });

  it('tasks running and terminal sessions open and total', async () => {
    const created = await api.post('/api/tasks', { script: 'sleep 30', targets: { agentIds: [id] } });
    await waitFor(async () => sample(await scrape(), 'muster_tasks_running') === 1, 'one task running');
    await api.post(`/api/tasks/${created.body.id}/cancel`);
    await waitFor(async () => sample(await scrape(), 'muster_tasks_running') === 0, 'none running');

    const before = await scrape();
    const c = await TermClient.connect(s, api);
    const v = await c.open(id);
    const open = await scrape();
    expect(sample(open, 'muster_terminal_sessions_open')).toBe(1);
    expect(sample(open, 'muster_terminal_sessions_total') - sample(before, 'muster_terminal_sessions_total')).toBe(1);
    v.close();
    await v.closedP;
    expect(sample(await scrape(), 'muster_terminal_sessions_open')).toBe(0);
    c.close();
  });

  it('rollout targets by result', async () => {
    const upd = startAgent(s, { name: 'm-upd', args: ['--install-root', tmpDir('noinstall')] });
    await api.waitAgent(await agentId(upd), 'online');
    const pkgDir = tmpDir('m-pkg');
    fs.writeFileSync(path.join(pkgDir, 'VERSION'), '9.0.0\n');
    const file = path.join(tmpDir('m-pkgout'), 'muster-agent-9.0.0-linux-x64.tar.gz');
    execFileSync('tar', ['-czf', file, '-C', pkgDir, './VERSION']);
    const sig = Buffer.alloc(64, 7).toString('base64');
    const up = await api.req('POST', `/api/artifacts?version=9.0.0&signature=${encodeURIComponent(sig)}`, new Uint8Array(fs.readFileSync(file)), {
      'content-type': 'application/octet-stream',
    });
    expect(up.status).toBe(201);
    const before = await scrape();
    // m-1 runs from the checkout (skipped), m-upd refuses the package (failed).
    const r = await api.post('/api/rollouts', { artifactId: up.body.id, selector: 'all' });
    expect(r.status).toBe(201);
    const after = await waitFor(
      async () => {
        const t = await scrape();
        return sample(t, 'muster_rollout_targets_total', { result: 'failed' }) > sample(before, 'muster_rollout_targets_total', { result: 'failed' })
          ? t
          : null;
      },
      'a failed target',
      60_000,
    );
    expect(sample(after, 'muster_rollout_targets_total', { result: 'skipped' }) - sample(before, 'muster_rollout_targets_total', { result: 'skipped' })).toBe(
      1,
    );
    await upd.stop();
  });

  it('heartbeat round trips: reported by agents that measure them (never pinged for it), pinged for the others', async () => {
    // The real agent measures each acknowledged heartbeat's round trip and reports it with the next.
    const first = await waitFor(async () => {
      const t = await scrape();
      return sample(t, 'muster_agent_heartbeat_rtt_seconds_count') >= 3 ? t : null;
    }, 'round trips reported');
    expect(sample(first, 'muster_agent_heartbeat_rtt_seconds_sum')).toBeGreaterThan(0);
    // Two raw agents: one that does not report round trips (an older agent) is pinged every
    // MUSTER_AGENT_PING_INTERVAL_MS; one that does is never pinged, and what it reports is observed.
    const ids = { older: randomUUID(), newer: randomUUID() };
    const older = await helloAgent(s.wsUrl, { agentId: ids.older, enrollToken: s.enrollToken });
    const newer = await helloAgent(s.wsUrl, { agentId: ids.newer, enrollToken: s.enrollToken }, { capabilities: ['exec', 'heartbeat-rtt'] });
    const pings = { older: 0, newer: 0 };
    older.ws.on('ping', () => pings.older++);
    newer.ws.on('ping', () => pings.newer++);
    const beat = setInterval(() => {
      for (const r of [older, newer]) if (r.isOpen()) r.send({ type: 'heartbeat', metrics: sampleMetrics() });
    }, 200);
    try {
      const before = await scrape();
      // 7 s: above the largest bucket (5 s), so this one sample is told apart from the real agent's.
      newer.send({ type: 'heartbeat', rttMs: 7000, metrics: sampleMetrics() });
      await waitFor(() => pings.older >= 3 || null, 'pings to the agent that does not report round trips');
      const after = await scrape();
      const above5s = (t: string) =>
        sample(t, 'muster_agent_heartbeat_rtt_seconds_bucket', { le: '+Inf' }) - sample(t, 'muster_agent_heartbeat_rtt_seconds_bucket', { le: '5' });
      expect(above5s(after) - above5s(before)).toBe(1);
      expect(pings.newer).toBe(0);
      expect(older.isOpen() && newer.isOpen()).toBe(true);
    } finally {
      clearInterval(beat);
      older.close();
      newer.close();
      // Gone before the next test counts status changes and connection durations.
      for (const x of [ids.older, ids.newer]) await api.waitAgent(x, 'offline');
    }
  });

  it('connection durations and status changes; no id in any label', async () => {
    const before = await scrape();
    await a.stop();
    await api.waitAgent(id, 'offline');
    const after = await scrape();
    expect(
      sample(after, 'muster_agent_status_changes_total', { status: 'offline' }) - sample(before, 'muster_agent_status_changes_total', { status: 'offline' }),
    ).toBe(1);
    expect(sample(after, 'muster_agent_connection_duration_seconds_count') - sample(before, 'muster_agent_connection_duration_seconds_count')).toBe(1);
    const b = startAgent(s, { name: 'm-1', stateDir: a.stateDir });
    await api.waitAgent(await agentId(b), 'online');
    const back = await scrape();
    expect(
      sample(back, 'muster_agent_status_changes_total', { status: 'online' }) - sample(after, 'muster_agent_status_changes_total', { status: 'online' }),
    ).toBe(1);

    const ids = [id, ...((await api.get('/api/tasks?limit=100')).body.items as { id: string }[]).map((t) => t.id)];
    for (const x of ids) expect(back).not.toContain(x);
  });

  it('the Grafana dashboard and the Prometheus example only name metrics the server exports', async () => {
    const text = await scrape();
    const exported = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const dash = fs.readFileSync(path.join(ROOT, 'deployment', 'grafana', 'muster.json'), 'utf8');
    const parsed = JSON.parse(dash) as { panels: { targets?: { expr: string }[] }[] };
    const exprs = parsed.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(15);
    const prom = fs.readFileSync(path.join(ROOT, 'deployment', 'prometheus.yml'), 'utf8');
    const used = new Set([...`${exprs.join('\n')}\n${prom}`.matchAll(/\bmuster_[a-z_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')));
    for (const name of used) expect(exported, name).toContain(name);
  });
});
