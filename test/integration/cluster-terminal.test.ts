import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, sleep, startAgent, waitFor, type TestServer } from '../helpers/harness.js';
import { startThreeNodes, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { withDb } from '../helpers/raw-agent.js';
import { TermClient } from '../helpers/terminal-client.js';

/**
 * Terminals across nodes (issue 12): three real server nodes (dist/server.js) on one MariaDB and
 * one NATS with a cluster prefix of their own; a real agent connected to node A only; an operator's
 * console on node B opens, types, resizes, floods (flow control end to end), detaches and
 * reattaches; an admin's console on node C watches. Recording once, on node A.
 */
const cluster = testCluster();

let nodes: ThreeNodes;
let db: ThreeNodes['db'];
let a: TestServer;
let b: TestServer;
let c: TestServer;
let opB: Api;
let adminC: Api;
let id = '';

beforeAll(async () => {
  nodes = await startThreeNodes(cluster);
  ({ db, a, b, c } = nodes);
  const adminB = await Api.login(b.url);
  opB = await adminB.userWithRole('operator');
  adminC = await Api.login(c.url);
  const agent = startAgent(a, { name: 'far-away' });
  id = await agentId(agent);
  // Node B and C know the agent is online (on node A).
  await adminB.waitAgent(id, 'online', 30_000);
  await adminC.waitAgent(id, 'online', 30_000);
}, 240_000);

afterAll(() => nodes.stop());

describe('cluster: a terminal on an agent of node A, driven from node B, watched from node C', () => {
  it('opens, types, resizes, watches, floods with bounded buffers, reattaches and records once', async () => {
    const consoleB = await TermClient.connect(b, opB);
    const t = await consoleB.open(id, 100, 30);
    expect(await t.run('echo hello-$((6*7))')).toContain('hello-42');
    expect(await t.run('stty size')).toMatch(/^30 100\r?$/m);
    t.resize(132, 43);
    await waitFor(async () => /^43 132\r?$/m.test(await t.run('stty size')), 'stty size after a resize from node B', 15_000, 100);

    // The session is held by node A (its row, its recording).
    const row = await withDb(db.url, (k) => k('terminal_sessions').where({ id: t.sessionId }).first('node', 'closed_at'));
    expect(row).toMatchObject({ node: 'node-a', closed_at: null });

    // An admin on node C watches: sees what the operator on B types, and cannot type.
    const consoleC = await TermClient.connect(c, adminC);
    const w = await consoleC.attach(t.sessionId, 'watch');
    const since = w.mark;
    expect(await t.run('echo seen-from-$((1+2))')).toContain('seen-from-3');
    await w.waitText('seen-from-3', since);
    w.write('echo typed-by-watcher\r');
    await consoleC.sock.next((m) => m.type === 'error' && m.code === 'forbidden', 10_000, 'watcher input refused');

    // Flow control end to end: B stops acknowledging; the agent pauses at its high watermark
    // (1 MiB), so B receives about that much and no more while the flood runs.
    t.holdAcks = true;
    const base = t.bytes;
    t.write("head -c 4000000 /dev/zero | tr '\\0' x; echo; echo flood-$((4*1))-done\r");
    await waitFor(() => t.bytes - base > 512 * 1024, 'flood output at node B', 20_000, 50);
    await sleep(2000);
    const held = t.bytes - base;
    process.stderr.write(`received while holding acks: ${held} bytes\n`);
    expect(held).toBeLessThan(1024 * 1024 + 256 * 1024);
    t.holdAcks = false;
    t.ackPending();
    await t.waitText('flood-4-done', 0, 120_000);
    // The watcher kept up (it acknowledges) or was dropped as behind; either way the operator finished.
    expect(t.closed).toBeNull();

    // Detach from B; reattach from a new console on B: the scrollback replays, typing goes on.
    const marker = `before-detach-${Math.random().toString(36).slice(2, 8)}`;
    await t.run(`echo ${marker}`);
    t.detach();
    consoleB.close();
    await sleep(500);
    const consoleB2 = await TermClient.connect(b, opB);
    const t2 = await consoleB2.attach(t.sessionId, 'control');
    await t2.waitText(marker);
    expect(await t2.run('echo again-$((2*3))')).toContain('again-6');

    // Close from B: every console is told, the row is closed once, the recording is on node A only.
    t2.close();
    const closed = await t2.closedP;
    expect(closed.reason).toMatch(/closed by/);
    await waitFor(() => w.closed, 'the watcher on C told of the end', 10_000, 50);
    const done = await waitFor(
      async () => withDb(db.url, (k) => k('terminal_sessions').where({ id: t.sessionId }).whereNotNull('closed_at').first('node', 'recording', 'bytes_out')),
      'the closed row',
      15_000,
    );
    expect(done.node).toBe('node-a');
    expect(Number(done.bytes_out)).toBeGreaterThan(4_000_000);
    const rec = path.join(a.dataDir, done.recording as string);
    expect(fs.existsSync(rec)).toBe(true);
    expect(fs.readFileSync(rec, 'utf8')).toContain('seen-from-3');
    expect(fs.existsSync(path.join(b.dataDir, done.recording as string))).toBe(false);
    expect(fs.existsSync(path.join(c.dataDir, done.recording as string))).toBe(false);
    const closes = async () =>
      Number((await withDb(db.url, (k) => k('audit_log').where({ target_id: t.sessionId, action: 'terminal.close' }).count({ n: '*' })))[0]!.n);
    await waitFor(async () => (await closes()) >= 1, 'the terminal.close audit entry', 15_000);
    await sleep(500);
    expect(await closes()).toBe(1);
    consoleB2.close();
    consoleC.close();
  }, 300_000);
});
