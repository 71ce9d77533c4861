import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeFrame } from '../../protocol/index.js';
import { alive, createTask, outputText, pidsIn, waitExecution, waitTask } from '../helpers/exec.js';
import { Api, agentId, consoleSocket, sleep, startAgent, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { startThreeNodes, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { withDb } from '../helpers/raw-agent.js';

/**
 * Task takeover (issue 12): three real server nodes (dist/server.js) on one MariaDB and one NATS
 * under a cluster prefix of their own, agents connected to node A only. A task is created on
 * another node (which owns it) and that node is killed with SIGKILL while the script runs: a live
 * node takes the task over within seconds (audited once), the execution ends in its true state
 * once (exit code, output stored once without a gap), a console on A sees the end live; a queued
 * execution of a window-1 task runs after the takeover; a cancel while the owner is dead answers
 * 503 + Retry-After until the task is taken over, then cancels it.
 */
const cluster = testCluster();

let nodes: ThreeNodes;
let db: ThreeNodes['db'];
let a: TestServer;
let b: TestServer;
let c: TestServer;
let apiA: Api;
let agent1 = '';
let agent2 = '';

const ownerOf = async (taskId: string): Promise<string | null> =>
  (await withDb(db.url, (k) => k('tasks').where({ id: taskId }).first('owner_node')))?.owner_node ?? null;
const takeovers = async (taskId: string) =>
  withDb(db.url, (k) => k('audit_log').where({ target_id: taskId, action: 'task.takeover' }).select('actor', 'details')) as Promise<
    { actor: string; details: string | Record<string, unknown> }[]
  >;
/** Stored output rows of an execution: each sequence number once (part 0), none missing. */
async function expectStoredOnce(executionId: string): Promise<void> {
  const rows = (await withDb(db.url, (k) => k('execution_output').where({ execution_id: executionId, part: 0 }).select('seq'))) as { seq: number }[];
  const seqs = rows.map((r) => Number(r.seq)).sort((x, y) => x - y);
  expect(seqs.length).toBeGreaterThan(0);
  expect(seqs).toEqual(seqs.map((_, i) => i));
}

beforeAll(async () => {
  nodes = await startThreeNodes(cluster);
  ({ db, a, b, c } = nodes);
  apiA = await Api.login(a.url);
  const ag1 = startAgent(a, { name: 'takeover-1' });
  const ag2 = startAgent(a, { name: 'takeover-2' });
  [agent1, agent2] = await Promise.all([agentId(ag1), agentId(ag2)]);
  const apiB = await Api.login(b.url);
  for (const id of [agent1, agent2]) await apiB.waitAgent(id, 'online', 30_000);
}, 240_000);

afterAll(() => nodes.stop());

describe('cluster: the running tasks of a killed node are taken over by a live node', () => {
  it('kill -9 of the owner while its script runs on A: taken over, failed with exit code 3 once, output stored once, the end seen live on A', async () => {
    const apiB = await Api.login(b.url);
    const runs = path.join(tmpDir('takeover-runs'), 'runs');
    const apiC = await Api.login(c.url);
    // Consoles on both survivors: one shares its node with the new owner, the other gets the live output over NATS.
    const consoles = [await consoleSocket(a, apiA), await consoleSocket(c, apiC)];
    for (const con of consoles) await con.next((m) => m.type === 'ready');
    const t = await createTask(apiB, {
      script: `echo run >> ${runs}; for i in 1 2 3; do echo "before $i"; done; sleep 4; for i in 1 2 3; do echo "after $i"; done; exit 3`,
      targets: { agentIds: [agent1] },
    });
    expect(await ownerOf(t.id)).toBe('node-b');
    for (const con of consoles) {
      con.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: t.id, output: true }));
      await con.next((m) => m.type === 'task.updated' && m.task.id === t.id, 15_000, 'the task snapshot');
    }
    await waitExecution(apiB, t.id, (x) => x.status === 'running' && x.outputBytes > 0, 'running with its first lines', 30_000);
    const killedAt = Date.now();
    await b.kill();
    // A live node takes it over within seconds (one lease TTL in the registry, 3 s here, plus the sweep).
    const owner = await waitFor(
      async () => {
        const o = await ownerOf(t.id);
        return o && o !== 'node-b' ? o : null;
      },
      'the task taken over',
      30_000,
    );
    const tookMs = Date.now() - killedAt;
    expect(['node-a', 'node-c']).toContain(owner);
    expect(tookMs).toBeLessThan(20_000);
    const d = await waitTask(apiA, t.id, 60_000);
    expect(d.status).toBe('failed');
    expect(d.executions).toHaveLength(1);
    const e = d.executions[0];
    expect(e).toMatchObject({ status: 'failed', exitCode: 3, agentId: agent1, truncated: false });
    // The script ran once; its output is stored once, in order, without a gap.
    expect(fs.readFileSync(runs, 'utf8')).toBe('run\n');
    const expected = 'before 1\nbefore 2\nbefore 3\nafter 1\nafter 2\nafter 3\n';
    for (const api of [apiA, apiC]) expect(await outputText(api, e.id, 'stdout')).toBe(expected);
    await expectStoredOnce(e.id);
    // The consoles on A and C saw the end live: the final state, and the last lines (printed after
    // the kill, resent by the agent to the new owner) among the live chunks.
    for (const [i, con] of consoles.entries()) {
      const where = i === 0 ? 'A' : 'C';
      await con.next((m) => m.type === 'execution.updated' && m.execution.id === e.id && m.execution.status === 'failed', 30_000, `failed, live on ${where}`);
      const live = await waitFor(
        () => {
          const text = con.binary
            .map((x) => decodeFrame(new Uint8Array(x)))
            .filter((f) => f.op === 'execOutput' && f.executionId === e.id)
            .map((f) => Buffer.from(f.data).toString())
            .join('');
          return text.includes('after 3\n') ? text : null;
        },
        `the last line live on ${where}`,
        15_000,
      );
      expect(live).toContain('after 1\n');
      con.close();
    }
    // Audited once, by the system, with both nodes.
    const audit = await takeovers(t.id);
    expect(audit).toHaveLength(1);
    expect(audit[0]!.actor).toBe('system');
    const details = typeof audit[0]!.details === 'string' ? JSON.parse(audit[0]!.details) : audit[0]!.details;
    expect(details).toMatchObject({ from: 'node-b', to: owner });
    console.log(`takeover: task owned by ${owner} ${tookMs} ms after kill -9 of its node`);
  }, 180_000);

  it('a window-1 task with a queued execution: the second agent runs it after the takeover', async () => {
    await b.kill();
    b = await b.restart();
    const apiB = await Api.login(b.url);
    for (const id of [agent1, agent2]) await apiB.waitAgent(id, 'online', 30_000);
    const dir = tmpDir('takeover-queue');
    const go = path.join(dir, 'go');
    const t = await createTask(apiB, {
      script: `echo start; while [ ! -e ${go} ]; do sleep 0.05; done; echo end`,
      targets: { agentIds: [agent1, agent2] },
      concurrency: 1,
    });
    await waitExecution(apiB, t.id, (x) => x.status === 'running', 'the first execution running', 30_000);
    const before = (await apiB.get(`/api/tasks/${t.id}`)).body.executions as { status: string }[];
    expect(before.map((x) => x.status).sort()).toEqual(['pending', 'running']);
    await b.kill();
    await waitFor(
      async () => {
        const o = await ownerOf(t.id);
        return o && o !== 'node-b' ? o : null;
      },
      'the task taken over',
      30_000,
    );
    fs.writeFileSync(go, '');
    const d = await waitTask(apiA, t.id, 60_000);
    expect(d.status).toBe('succeeded');
    expect(d.executions.map((x: { status: string }) => x.status)).toEqual(['succeeded', 'succeeded']);
    for (const x of d.executions) {
      expect(await outputText(apiA, x.id, 'stdout')).toBe('start\nend\n');
      await expectStoredOnce(x.id);
    }
    expect(await takeovers(t.id)).toHaveLength(1);
  }, 180_000);

  it('a cancel while the owner is dead answers 503 with Retry-After until the task is taken over, then cancels it', async () => {
    await b.kill();
    b = await b.restart();
    const apiB = await Api.login(b.url);
    await apiB.waitAgent(agent1, 'online', 30_000);
    const pids = path.join(tmpDir('takeover-cancel'), 'pids');
    const t = await createTask(apiB, { script: `echo $$ >> ${pids}; sleep 300 & echo $! >> ${pids}; wait`, targets: { agentIds: [agent1] } });
    await waitExecution(apiB, t.id, (x) => x.status === 'running', 'running', 30_000);
    const procs = await waitFor(() => (pidsIn(pids).length === 2 ? pidsIn(pids) : null), 'the script pids', 15_000);
    await b.kill();
    const answers: number[] = [];
    const ok = await waitFor(
      async () => {
        const r = await apiA.post(`/api/tasks/${t.id}/cancel`, {});
        answers.push(r.status);
        if (r.status === 503) {
          expect(r.body.error.code).toBe('unavailable');
          expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
          await sleep(250);
          return null;
        }
        return r;
      },
      'the cancel accepted by the new owner',
      40_000,
    );
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    // Never lost nor a silent success while nobody owned it: 503s first (the owner was dead), then the cancel.
    expect(answers[0]).toBe(503);
    expect(answers.slice(0, -1).every((s) => s === 503)).toBe(true);
    const d = await waitTask(apiA, t.id, 30_000);
    expect(d.status).toBe('cancelled');
    expect(d.executions[0].status).toBe('cancelled');
    await waitFor(() => procs.every((p) => !alive(p)), 'the script gone', 15_000);
    const audit = await withDb(db.url, (k) => k('audit_log').where({ target_id: t.id, action: 'task.cancel', ok: true }).count({ n: '*' }));
    expect(Number(audit[0]!.n)).toBe(1);
  }, 180_000);
});
