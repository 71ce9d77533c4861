import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeFrame } from '../../protocol/index.js';
import { alive, createTask, outputText, pidsIn, waitExecution, waitTask } from '../helpers/exec.js';
import { Api, agentId, consoleSocket, sleep, startAgent, tmpDir, waitFor, type TestAgent, type TestServer } from '../helpers/harness.js';
import { startThreeNodes, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { withDb } from '../helpers/raw-agent.js';

/**
 * Batch execution across nodes (issue 12): three real server nodes (dist/server.js) on one MariaDB
 * and one NATS with a cluster prefix of their own; a real agent connected to node A only. Tasks are
 * created on node B (which runs them), their output is streamed live to a console on node C and
 * stored once; cancels from B and from C stop the script on A; a task queued while the agent is
 * away starts when it comes back to node A; after kill -9 of node A an agent that moved to node C
 * finishes its running execution there, stored once by B.
 */
const cluster = testCluster();

let nodes: ThreeNodes;
let db: ThreeNodes['db'];
let a: TestServer;
let b: TestServer;
let c: TestServer;
let apiA: Api;
let apiB: Api;
let apiC: Api;
let agent: TestAgent;
let id = '';

beforeAll(async () => {
  nodes = await startThreeNodes(cluster);
  ({ db, a, b, c } = nodes);
  [apiA, apiB, apiC] = await Promise.all([Api.login(a.url), Api.login(b.url), Api.login(c.url)]);
  agent = startAgent(a, { name: 'exec-far' });
  id = await agentId(agent);
  await apiB.waitAgent(id, 'online', 30_000);
  await apiC.waitAgent(id, 'online', 30_000);
}, 240_000);

afterAll(() => nodes.stop());

describe('cluster: tasks created on node B run on an agent of node A, watched from node C', () => {
  it('streams output to a console on C, stores it once, gets the exit code right', async () => {
    const go = path.join(tmpDir('go'), 'go');
    const expected = Array.from({ length: 30 }, (_, i) => `line ${i + 1} of the far run\n`).join('');
    const consoleC = await consoleSocket(c, apiC);
    await consoleC.next((m) => m.type === 'ready');
    // The script waits for the test, so the console on C follows the task before any output.
    const t = await createTask(apiB, {
      script: `while [ ! -e ${go} ]; do sleep 0.05; done; for i in $(seq 1 30); do echo "line $i of the far run"; echo "err $i" >&2; done; exit 3`,
      targets: { agentIds: [id] },
    });
    // Dispatched by B to the agent on A (not `skipped` as an agent of another node).
    expect(t.executions[0].status).toBe('dispatched');
    consoleC.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: t.id }));
    await consoleC.next((m) => m.type === 'task.updated' && m.task.id === t.id, 15_000, 'the task snapshot on C');
    // The agent on A has started it (it may have before C subscribed: asked through C's REST).
    await waitExecution(apiC, t.id, (x) => x.status === 'running', 'running, seen from C', 30_000);
    fs.writeFileSync(go, '');
    const done = await waitTask(apiB, t.id, 60_000);
    expect(done.status).toBe('failed');
    const e = done.executions[0];
    expect(e).toMatchObject({ status: 'failed', exitCode: 3, agentId: id });
    // Live on C: every chunk, in order, exactly what the script printed.
    await consoleC.next((m) => m.type === 'execution.updated' && m.execution.id === e.id && m.execution.status === 'failed', 30_000, 'failed on C');
    const frames = consoleC.binary.map((x) => decodeFrame(new Uint8Array(x)));
    const live = (stream: string) =>
      Buffer.concat(frames.filter((f) => f.op === 'execOutput' && f.executionId === e.id && f.stream === stream).map((f) => Buffer.from(f.data))).toString();
    expect(live('stdout')).toBe(expected);
    expect(live('stderr')).toBe(Array.from({ length: 30 }, (_, i) => `err ${i + 1}\n`).join(''));
    // Stored once, readable from every node.
    for (const api of [apiA, apiB, apiC]) {
      expect(await outputText(api, e.id, 'stdout')).toBe(expected);
      const viaNode = (await api.get(`/api/tasks/${t.id}`)).body;
      expect(viaNode.executions[0]).toMatchObject({ status: 'failed', exitCode: 3 });
    }
    const rows = await withDb(db.url, (k) => k('execution_output').where({ execution_id: e.id }).select('seq', 'stream'));
    const seqs = rows.map((r: { seq: number }) => Number(r.seq));
    expect(new Set(seqs).size).toBe(seqs.length);
    const owner = await withDb(db.url, (k) => k('tasks').where({ id: t.id }).first('owner_node'));
    expect(owner.owner_node).toBe('node-b');
    consoleC.close();
  }, 120_000);

  it('cancel from B (the owner) and from C stops the running script on A', async () => {
    for (const [who, api] of [
      ['B', apiB],
      ['C', apiC],
    ] as const) {
      const pids = path.join(tmpDir('far-cancel'), 'pids');
      const t = await createTask(apiB, { script: `echo $$ >> ${pids}; sleep 300 & echo $! >> ${pids}; wait`, targets: { agentIds: [id] } });
      await waitExecution(apiB, t.id, (x) => x.status === 'running', 'running', 30_000);
      const procs = await waitFor(() => (pidsIn(pids).length === 2 ? pidsIn(pids) : null), 'the script pids', 15_000);
      expect(procs.every(alive)).toBe(true);
      const r = await api.post(`/api/tasks/${t.id}/cancel`, {});
      expect(r.status, `cancel from ${who}: ${JSON.stringify(r.body)}`).toBe(200);
      const d = await waitTask(apiB, t.id, 30_000);
      expect(d.status).toBe('cancelled');
      expect(d.executions[0].status).toBe('cancelled');
      await waitFor(() => procs.every((p) => !alive(p)), `the script cancelled from ${who} to be gone`, 15_000);
      // Once more: the task is over, whichever node is asked.
      expect((await api.post(`/api/tasks/${t.id}/cancel`, {})).status).toBe(409);
      const audit = await withDb(db.url, (k) => k('audit_log').where({ target_id: t.id, action: 'task.cancel', ok: true }).count({ n: '*' }));
      expect(Number(audit[0]!.n)).toBe(1);
    }
  }, 120_000);

  it('a task queued on B while the agent is away starts when the agent is back on A', async () => {
    await agent.stop();
    await apiB.waitAgent(id, 'offline', 30_000);
    const t = await createTask(apiB, { script: 'echo queued-$((40+2))', targets: { agentIds: [id] }, offline: 'queue', queueTtlSec: 600 });
    expect(t.executions[0].status).toBe('pending');
    agent = startAgent(a, { name: 'exec-far', stateDir: agent.stateDir });
    await apiB.waitAgent(id, 'online', 30_000);
    const d = await waitTask(apiB, t.id, 60_000);
    expect(d.status).toBe('succeeded');
    expect(await outputText(apiC, d.executions[0].id, 'stdout')).toBe('queued-42\n');
  }, 120_000);

  it('the owner node restarts while its execution runs on A: the output printed meanwhile is resent, nothing is lost', async () => {
    const dir = tmpDir('owner-restart');
    const [go1, go2] = [path.join(dir, 'go1'), path.join(dir, 'go2')];
    const t = await createTask(apiB, {
      script: `echo first; while [ ! -e ${go1} ]; do sleep 0.05; done; echo while-b-was-down; while [ ! -e ${go2} ]; do sleep 0.05; done; echo last`,
      targets: { agentIds: [id] },
    });
    await waitExecution(apiB, t.id, (x) => x.status === 'running' && x.outputBytes > 0, 'running with its first line', 30_000);
    await b.stop();
    fs.writeFileSync(go1, '');
    await sleep(500); // the line printed while node B is down (A forwards it to nobody)
    b = await b.restart();
    apiB = await Api.login(b.url);
    await waitFor(async () => ((await outputText(apiB, t.executions[0].id, 'stdout')).includes('while-b-was-down') ? true : null), 'the resent line', 30_000);
    fs.writeFileSync(go2, '');
    const d = await waitTask(apiB, t.id, 60_000);
    expect(d.executions[0]).toMatchObject({ status: 'succeeded', exitCode: 0, truncated: false });
    expect(await outputText(apiC, d.executions[0].id, 'stdout')).toBe('first\nwhile-b-was-down\nlast\n');
  }, 180_000);

  it('kill -9 of the agent node: the agent is back through the other node and the running execution ends in its true state, once', async () => {
    // A second agent that knows nodes A and C, not B (which runs the task).
    const mover = startAgent(a, { name: 'exec-mover', serverUrl: `${a.wsUrl},${c.wsUrl}` });
    const moverId = await agentId(mover);
    await apiB.waitAgent(moverId, 'online', 30_000);
    const owner = async () => (await withDb(db.url, (k) => k('agents').where({ id: moverId }).first('owner_node')))?.owner_node ?? null;
    const holder = await waitFor(owner, 'the agent node');
    expect(['node-a', 'node-c']).toContain(holder);
    const [victim, other] = holder === 'node-a' ? [a, 'node-c'] : [c, 'node-a'];
    const go = path.join(tmpDir('go'), 'go');
    const t = await createTask(apiB, {
      script: `echo before-move; while [ ! -e ${go} ]; do sleep 0.05; done; echo after-move; exit 5`,
      targets: { agentIds: [moverId] },
    });
    await waitExecution(apiB, t.id, (x) => x.status === 'running' && x.outputBytes > 0, 'running with its first line', 30_000);
    await victim.kill();
    await waitFor(async () => ((await owner()) === other ? true : null), `the agent back through ${other}`, 30_000);
    fs.writeFileSync(go, '');
    const d = await waitTask(apiB, t.id, 60_000);
    expect(d.executions[0]).toMatchObject({ status: 'failed', exitCode: 5 });
    for (const api of [apiB, holder === 'node-a' ? apiC : apiA]) expect(await outputText(api, d.executions[0].id, 'stdout')).toBe('before-move\nafter-move\n');
    const rows = await withDb(db.url, (k) => k('execution_output').where({ execution_id: d.executions[0].id }).select('seq'));
    expect(new Set(rows.map((r: { seq: number }) => Number(r.seq))).size).toBe(rows.length);
  }, 180_000);
});
