/**
 * Exactly-once under faults (issue 10, defects 1–4): late results replace `lost`, a dispatch sent
 * on a silently dead link is re-sent, finished results survive an agent restart, and an agent
 * stopped with SIGTERM records how its running scripts ended.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeExecOutput } from '../../protocol/frames.js';
import { alive, createTask, outputText, pidsIn, waitExecution, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, consoleSocket, databases, startAgent, startServer, tmpDir, waitFor } from '../helpers/harness.js';
import { helloAgent, sampleMetrics } from '../helpers/raw-agent.js';
import { startProxy } from '../helpers/tcp-proxy.js';

const dbs = await databases();

const lines = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0);

describe.each(dbs)('exactly once (%s)', (db) => {
  afterAll(cleanup);

  it('defect 1: a result reported after the execution was declared lost and its task completed replaces lost, live', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'x-late', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const dir = tmpDir('late');
    const [runs, gate, done] = ['runs', 'gate', 'done'].map((f) => path.join(dir, f)) as [string, string, string];
    const t = await createTask(api, {
      script: 'echo run >> "$1"; echo before; while [ ! -e "$2" ]; do sleep 0.05; done; echo after; touch "$3"',
      args: [runs, gate, done],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running' && e.outputBytes > 0, 'running with its first line stored');
    proxy.cut();
    // The agent stays away longer than the reconcile timeout: lost, and the task completes.
    const d = await waitTask(api, t.id);
    expect(d.status).toBe('failed');
    const lost = d.executions[0];
    expect(lost.status).toBe('lost');
    fs.writeFileSync(gate, '');
    await waitFor(() => fs.existsSync(done), 'script finished while its agent is away');
    const c = await consoleSocket(s, api);
    c.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: t.id, output: true }));
    await c.next((m) => m.type === 'task.updated' && m.task.id === t.id, 15_000, 'subscribed');
    proxy.restore();
    const e = await waitFor(
      async () => {
        const r = await api.get(`/api/executions/${lost.id}`);
        return r.body.status === 'succeeded' ? r.body : null;
      },
      'the late result replaces lost',
      30_000,
    );
    expect(e.exitCode).toBe(0);
    expect(e.reason).toBeNull();
    expect(Date.parse(e.reconciledAt)).toBeGreaterThan(Date.parse(d.finishedAt) - 1);
    // Counts and status are derived afresh (the task row is stored after the output), and
    // consoles hear of it as it happens.
    const after = await waitTask(api, t.id);
    expect(after.status).toBe('succeeded');
    expect(after.counts).toEqual({ succeeded: 1 });
    expect(await outputText(api, lost.id)).toBe('before\nafter\n');
    await c.next((m) => m.type === 'execution.updated' && m.execution.id === lost.id && m.execution.status === 'succeeded', 15_000, 'live execution update');
    await c.next((m) => m.type === 'task.updated' && m.task.id === t.id && m.task.status === 'succeeded', 15_000, 'live task update');
    c.close();
    // The agent was acked: a further reconnect changes nothing, and the script ran once.
    expect(lines(runs)).toBe(1);
    await proxy.close();
  });

  it('defect 1: a lost execution still running when its agent returns is running again, then takes its result', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'x-late-run', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const gate = path.join(tmpDir('late-run'), 'gate');
    const t = await createTask(api, {
      script: 'echo one; while [ ! -e "$1" ]; do sleep 0.05; done; echo two; exit 5',
      args: [gate],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running' && e.outputBytes > 0, 'running');
    proxy.cut();
    const d = await waitTask(api, t.id);
    expect(d.executions[0].status).toBe('lost');
    proxy.restore();
    await waitExecution(api, t.id, (e) => e.status === 'running', 'running again after the agent came back');
    expect((await api.get(`/api/tasks/${t.id}`)).body.status).toBe('running');
    fs.writeFileSync(gate, '');
    const f = await waitTask(api, t.id);
    expect(f.status).toBe('failed');
    expect(f.executions[0].status).toBe('failed');
    expect(f.executions[0].exitCode).toBe(5);
    expect(f.executions[0].reconciledAt).toBeTruthy();
    expect(await outputText(api, f.executions[0].id)).toBe('one\ntwo\n');
    await proxy.close();
  });

  it('defect 1: a late exec.finished on a live link (after "never started") is taken, its output asked again', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const creds = { agentId: randomUUID(), enrollToken: s.enrollToken };
    const raw = await helloAgent(s.wsUrl, creds);
    const beat = setInterval(() => raw.send({ type: 'heartbeat', metrics: sampleMetrics() }), 1000);
    try {
      await api.waitAgent(creds.agentId, 'online');
      const t = await createTask(api, { script: 'echo hi', targets: { agentIds: [creds.agentId] } });
      const run = await raw.next((m) => m.type === 'exec.run', 'exec.run');
      const d = await waitTask(api, t.id);
      expect(d.executions[0].status).toBe('lost');
      expect(d.executions[0].reason).toMatch(/never started/);
      // The agent had it after all: its output (dropped, the task is over) and its result.
      const now = Date.now();
      raw.send({ type: 'exec.started', executionId: run.executionId, pid: 4242, startedAt: now - 50 });
      raw.sendRaw(Buffer.from(encodeExecOutput(run.executionId, 'stdout', 0, Buffer.from('hi\n'))), true);
      const finished = {
        type: 'exec.finished',
        executionId: run.executionId,
        status: 'succeeded',
        exitCode: 0,
        signal: null,
        startedAt: now - 50,
        finishedAt: now,
        outputSeq: 1,
        truncated: false,
      };
      raw.send(finished);
      const resume = await raw.next((m) => m.type === 'exec.resume' && m.executionId === run.executionId, 'exec.resume');
      expect(resume.fromSeq).toBe(0);
      raw.sendRaw(Buffer.from(encodeExecOutput(run.executionId, 'stdout', 0, Buffer.from('hi\n'))), true);
      raw.send(finished);
      await raw.next((m) => m.type === 'exec.ack' && m.executionId === run.executionId, 'exec.ack');
      const e = (await api.get(`/api/executions/${run.executionId}`)).body;
      expect(e.status).toBe('succeeded');
      expect(e.truncated).toBe(false);
      expect(e.reconciledAt).toBeTruthy();
      expect(await outputText(api, run.executionId)).toBe('hi\n');
      expect((await waitTask(api, t.id)).status).toBe('succeeded');
    } finally {
      clearInterval(beat);
      raw.close();
    }
  });

  it('defect 1: re-running failed executions does not silently re-run lost ones', async () => {
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'x-rerun-a' });
    const b = startAgent(s, { name: 'x-rerun-b' });
    const [ia, ib] = [await agentId(a), await agentId(b)];
    await api.waitAgent(ia, 'online');
    await api.waitAgent(ib, 'online');
    const t = await createTask(api, { script: 'if [ "$MUSTER_AGENT_ID" = "$1" ]; then exit 2; fi; sleep 60', args: [ia], targets: { agentIds: [ia, ib] } });
    await waitExecution(api, t.id, (e) => e.agentId === ib && e.status === 'running', 'b running');
    await b.stop('SIGKILL');
    const d = await waitTask(api, t.id);
    expect(d.executions.map((e: any) => e.status).sort()).toEqual(['failed', 'lost']);
    const r = await api.post(`/api/tasks/${t.id}/rerun`, {});
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('lost_unconfirmed');
    expect(r.body.error.lost).toBe(1);
    expect(r.body.error.message).toMatch(/may run it twice/);
    expect((await api.post(`/api/tasks/${t.id}/rerun`, { includeLost: 'yes' })).status).toBe(400);
    const only = await api.post(`/api/tasks/${t.id}/rerun`, { includeLost: false });
    expect(only.status).toBe(201);
    expect(only.body.executions.map((e: any) => e.agentId)).toEqual([ia]);
    const both = await api.post(`/api/tasks/${t.id}/rerun`, { includeLost: true });
    expect(both.status).toBe(201);
    expect(both.body.executions.map((e: any) => e.agentId).sort()).toEqual([ia, ib].sort());
    const audit = await api.get('/api/audit?action=task.rerun');
    const reruns = audit.body.items.filter((x: any) => x.action === 'task.rerun');
    expect(reruns.map((x: any) => x.details.includeLost).sort()).toEqual([false, true]);
    // "all" is explicit about running everywhere: no question asked.
    expect((await api.post(`/api/tasks/${t.id}/rerun`, { all: true })).status).toBe(201);
  });

  it('defect 2: an exec.run sent on a silently dead link runs, once, after the agent reconnects', async () => {
    const s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: '1000' } });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'x-dead-link', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const runs = path.join(tmpDir('dead-link'), 'runs');
    proxy.deadLink();
    // The server still has the agent online: it dispatches into the void.
    const t = await createTask(api, { script: 'echo run >> "$1"; echo ran', args: [runs], targets: { agentIds: [id] } });
    expect(t.executions[0].status).toBe('dispatched');
    const d = await waitTask(api, t.id, 60_000);
    expect(a.output()).toMatch(/server silent; reconnecting/);
    const e = d.executions[0];
    expect(e.status).toBe('succeeded');
    expect(lines(runs)).toBe(1);
    expect(await outputText(api, e.id)).toBe('ran\n');
    await proxy.close();
  });

  it('defect 2: an exec.run that did arrive (its start unheard) is not run again when re-sent after an agent restart', async () => {
    const s = await startServer({ db, env: { MUSTER_HEARTBEAT_INTERVAL_MS: '1000' } });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'x-dead-up', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const runs = path.join(tmpDir('dead-up'), 'runs');
    // Only the agent's bytes are dropped: exec.run arrives, exec.started never does.
    proxy.deadLink('toServer');
    const t = await createTask(api, { script: 'echo run >> "$1"; sleep 60', args: [runs], targets: { agentIds: [id] } });
    await waitFor(() => lines(runs) === 1, 'the script started on the agent');
    expect((await api.get(`/api/tasks/${t.id}`)).body.executions[0].status).toBe('dispatched');
    await a.stop('SIGKILL');
    startAgent(s, { name: 'x-dead-up', stateDir: a.stateDir, serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const d = await waitTask(api, t.id, 60_000);
    expect(d.executions[0].status).toBe('lost');
    expect(d.executions[0].reason).toMatch(/duplicate/);
    expect(lines(runs)).toBe(1);
    await proxy.close();
  });

  it('defect 3: a result finished while disconnected survives an agent SIGKILL before the ack (state and output)', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, { name: 'x-journal', serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const dir = tmpDir('result-journal');
    const [runs, gate, done] = ['runs', 'gate', 'done'].map((f) => path.join(dir, f)) as [string, string, string];
    const t = await createTask(api, {
      script: 'echo run >> "$1"; echo first; while [ ! -e "$2" ]; do sleep 0.05; done; echo second; echo oops >&2; touch "$3"; exit 3',
      args: [runs, gate, done],
      targets: { agentIds: [id] },
    });
    await waitExecution(api, t.id, (e) => e.status === 'running' && e.outputBytes > 0, 'running with its first line stored');
    proxy.cut();
    await api.waitAgent(id, 'offline');
    fs.writeFileSync(gate, '');
    await waitFor(() => fs.existsSync(done), 'script finished while disconnected');
    const journal = path.join(a.stateDir, 'exec-results');
    // Logged once the result is journaled.
    await waitFor(() => /execution finished/.test(a.output()), 'the agent saw the script end');
    // Killed before it could report: only the journal knows how the script ended.
    await a.stop('SIGKILL');
    proxy.restore();
    const b = startAgent(s, { name: 'x-journal', stateDir: a.stateDir, serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const d = await waitTask(api, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('failed');
    expect(e.exitCode).toBe(3);
    expect(e.truncated).toBe(false);
    expect(await outputText(api, e.id, 'stdout')).toBe('first\nsecond\n');
    expect(await outputText(api, e.id, 'stderr')).toBe('oops\n');
    expect(lines(runs)).toBe(1);
    expect(b.output()).toMatch(/restored from the journal/);
    // Acked: the journal entry is gone.
    await waitFor(() => fs.readdirSync(journal).length === 0, 'journal emptied after the ack');
    await proxy.close();
  });

  it('defect 4: SIGTERM during a running script ends it cancelled (agent stopping) with its output, before the agent exits; nothing remains', async () => {
    // A short reconcile timeout: an execution left unreported would turn `lost` quickly.
    const s = await startServer({ db, env: { MUSTER_RECONCILE_TIMEOUT_SEC: '3' } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'x-sigterm', env: { MUSTER_AGENT_EXEC_STOP_DRAIN_SEC: '1', MUSTER_AGENT_EXEC_KILL_GRACE_SEC: '1' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const pidFile = path.join(tmpDir('sigterm'), 'pids');
    const t = await createTask(api, { script: 'echo $$ >> "$1"; echo before; sleep 30 & echo $! >> "$1"; wait', args: [pidFile], targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running' && e.outputBytes > 0, 'running with output');
    await waitFor(() => pidsIn(pidFile).length >= 2, 'script pids');
    const pids = pidsIn(pidFile);
    expect(await a.stop('SIGTERM')).toBe(0);
    // Recorded before the agent exited: final at once, not after the reconcile timeout.
    const e = (await api.get(`/api/executions/${t.executions[0].id}`)).body;
    expect(e.status).toBe('cancelled');
    expect(e.reason).toBe('agent stopping');
    expect(await outputText(api, e.id)).toBe('before\n');
    expect(pids.filter(alive)).toEqual([]);
    // Acknowledged before exit: nothing left in the journal.
    expect(fs.readdirSync(path.join(a.stateDir, 'exec-results'))).toEqual([]);
    expect((await waitTask(api, t.id)).status).toBe('cancelled');
  });

  it('defect 4: a script that ends within the stop drain time finishes normally', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'x-sigterm-drain', env: { MUSTER_AGENT_EXEC_STOP_DRAIN_SEC: '30' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const gate = path.join(tmpDir('sigterm-drain'), 'gate');
    const t = await createTask(api, { script: 'echo one; while [ ! -e "$1" ]; do sleep 0.05; done; echo two', args: [gate], targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running' && e.outputBytes > 0, 'running');
    const stopped = a.stop('SIGTERM');
    await waitFor(() => /waiting for running executions/.test(a.output()), 'agent draining');
    fs.writeFileSync(gate, '');
    expect(await stopped).toBe(0);
    const d = await waitTask(api, t.id);
    expect(d.executions[0].status).toBe('succeeded');
    expect(await outputText(api, d.executions[0].id)).toBe('one\ntwo\n');
  });

  it('defect 4: SIGTERM while the server is unreachable: journaled as cancelled, reported at the next start', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const proxy = await startProxy(s.port);
    const a = startAgent(s, {
      name: 'x-sigterm-away',
      serverUrl: `ws://127.0.0.1:${proxy.port}`,
      env: { MUSTER_AGENT_EXEC_STOP_DRAIN_SEC: '0', MUSTER_AGENT_EXEC_KILL_GRACE_SEC: '1' },
    });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const t = await createTask(api, { script: 'echo early; sleep 30', targets: { agentIds: [id] } });
    await waitExecution(api, t.id, (e) => e.status === 'running' && e.outputBytes > 0, 'running');
    proxy.cut();
    await api.waitAgent(id, 'offline');
    expect(await a.stop('SIGTERM')).toBe(0);
    proxy.restore();
    startAgent(s, { name: 'x-sigterm-away', stateDir: a.stateDir, serverUrl: `ws://127.0.0.1:${proxy.port}` });
    const d = await waitTask(api, t.id);
    expect(d.executions[0].status).toBe('cancelled');
    expect(d.executions[0].reason).toBe('agent stopping');
    expect(await outputText(api, d.executions[0].id)).toBe('early\n');
    await proxy.close();
  });
});
