import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as pty from 'node-pty';
import { Api, agentId, ROOT, sleep, startAgent, waitFor, type TestServer } from '../helpers/harness.js';
import { startThreeNodes, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { withDb } from '../helpers/raw-agent.js';
import { TermClient } from '../helpers/terminal-client.js';

/**
 * Terminals across nodes (issue 12): three real server nodes (dist/server.js) on one MariaDB and
 * one NATS with a cluster prefix of their own; a real agent connected to node A only; an operator's
 * console on node B opens, types, resizes, floods (flow control end to end), detaches and
 * reattaches; an admin's console on node C watches. Recording once, on node A. A console that asks
 * `direct` is sent to node A's own address (MUSTER_NODE_URL) instead, and relayed where a node has none.
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
  // Node A has its own address (MUSTER_NODE_URL): a console asking `direct` is sent there.
  nodes = await startThreeNodes(cluster, { nodeUrls: ['node-a'] });
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

  it('sends a console asking `direct` to the node holding the agent (MUSTER_NODE_URL), and relays where that node has none', async () => {
    const rows = async () => Number((await withDb(db.url, (k) => k('terminal_sessions').count({ n: '*' })))[0]!.n);
    const before = await rows();
    const consoleB = await TermClient.connect(b, opB);
    consoleB.sendJson({ type: 'term.open', ref: 'd1', agentId: id, cols: 90, rows: 20, direct: true });
    const where = await consoleB.sock.next((x) => x.ref === 'd1', 10_000, 'answer to a direct term.open');
    expect(where).toMatchObject({ type: 'term.elsewhere', node: 'node-a', url: a.url, agentId: id });
    // Nothing was opened on the way (no row, no shell).
    expect(await rows()).toBe(before);

    // The same operator opens it on node A itself: a terminal of that node, recorded there.
    const consoleA = await TermClient.connect({ url: where.url, wsUrl: where.url.replace(/^http/, 'ws') }, opB);
    const t = await consoleA.open(id, 90, 20);
    expect(await t.run('echo routed-$((5*5))')).toContain('routed-25');
    expect(await withDb(db.url, (k) => k('terminal_sessions').where({ id: t.sessionId }).first('node'))).toMatchObject({ node: 'node-a' });

    // A reattach asked of node B with `direct` is sent there too; without it node B relays it as before.
    consoleB.sendJson({ type: 'term.attach', ref: 'd2', sessionId: t.sessionId, mode: 'control', direct: true });
    const again = await consoleB.sock.next((x) => x.ref === 'd2', 10_000, 'answer to a direct term.attach');
    expect(again).toMatchObject({ type: 'term.elsewhere', node: 'node-a', url: a.url, sessionId: t.sessionId });
    const relayed = await consoleB.attach(t.sessionId, 'control');
    expect(await relayed.run('echo relayed-$((6*6))')).toContain('relayed-36');

    // `muster term` against node B does the same: the session it opens is node A's, typed into through node A.
    const token = ((await opB.post('/api/tokens', { name: 'cluster-term' })).body as { token: string }).token;
    const consolesOnA = async () => Number(/^muster_console_sockets (\d+)/m.exec(await (await fetch(`${a.url}/metrics`)).text())?.[1]);
    const socketsBefore = await consolesOnA();
    const env = { ...process.env, MUSTER_SERVER: b.url, MUSTER_TOKEN: token, MUSTER_CLI_CONFIG: path.join(a.dataDir, 'no-cli.json') };
    const cli = pty.spawn(process.execPath, [path.join(ROOT, 'dist', 'cli.js'), 'term', id], {
      name: 'xterm-256color',
      cols: 100,
      rows: 30,
      env: env as Record<string, string>,
    });
    let text = '';
    cli.onData((d) => (text += d));
    const exited = new Promise<number>((r) => cli.onExit(({ exitCode }) => r(exitCode)));
    await waitFor(() => /\[session ([0-9a-f-]{36});/.exec(text)?.[1], 'muster term open', 30_000);
    const cliSession = /\[session ([0-9a-f-]{36});/.exec(text)![1]!;
    cli.write('echo cli-$((30+12))\r');
    await waitFor(() => /cli-42/.test(text), 'muster term output', 30_000);
    expect(text).not.toMatch(/not reachable/);
    // Its socket is one of node A's (a relayed one would be node B's only).
    expect(await consolesOnA()).toBe(socketsBefore + 1);
    expect(await withDb(db.url, (k) => k('terminal_sessions').where({ id: cliSession }).first('node'))).toMatchObject({ node: 'node-a' });
    cli.write('exit 0\r');
    expect(await exited).toBe(0);

    // An agent on node C (no MUSTER_NODE_URL): `direct` is relayed as without it.
    const near = startAgent(c, { name: 'near-c' });
    const nearId = await agentId(near);
    await (await Api.login(b.url)).waitAgent(nearId, 'online', 30_000);
    consoleB.sendJson({ type: 'term.open', ref: 'd3', agentId: nearId, cols: 80, rows: 24, direct: true });
    const opened = await consoleB.sock.next(
      (x) => x.ref === 'd3' && (x.type === 'term.opened' || x.type === 'term.elsewhere' || x.type === 'error'),
      20_000,
      'answer to d3',
    );
    expect(opened.type).toBe('term.opened');
    expect(await withDb(db.url, (k) => k('terminal_sessions').where({ id: opened.sessionId }).first('node'))).toMatchObject({ node: 'node-c' });
    consoleB.sendJson({ type: 'term.close', sessionId: opened.sessionId });
    relayed.close();
    consoleA.close();
    consoleB.close();
  }, 120_000);
});
