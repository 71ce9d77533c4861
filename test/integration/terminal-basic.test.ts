import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive } from '../helpers/exec.js';
import { Api, agentId, cleanup, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { TermClient, type TermView } from '../helpers/terminal-client.js';

describe('terminal basics: a real shell through the relay', () => {
  let s: TestServer;
  let op: Api;
  let id: string;
  let client: TermClient;
  let t: TermView;

  beforeAll(async () => {
    s = await startServer();
    const admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
    const a = startAgent(s, { name: 'term-basic' });
    id = await agentId(a);
    await admin.waitAgent(id, 'online');
    client = await TermClient.connect(s, op);
    t = await client.open(id, 100, 30);
    await t.run('true'); // the shell is up and answering
  });
  afterAll(cleanup);

  it('echo round trip', async () => {
    expect(await t.run('echo hello-$((6*7))')).toContain('hello-42');
  });

  it('tty prints a pts device', async () => {
    expect(await t.run('tty')).toMatch(/^\/dev\/pts\/\d+\r?$/m);
  });

  it('runs a login shell with TERM=xterm-256color, a UTF-8 locale and the home dir as cwd', async () => {
    const out = await t.run('echo "T=$TERM L=$LANG P=$PWD H=$HOME"; shopt -q login_shell && echo LOGIN');
    expect(out).toMatch(/T=xterm-256color/);
    expect(out).toMatch(/L=\S*(UTF-8|utf8)/i);
    const m = /P=(\S+) H=(\S+)/.exec(out)!;
    expect(m[1]).toBe(m[2]);
    expect(out).toContain('LOGIN');
  });

  it('does not leak the agent environment (enrollment token) into the shell', async () => {
    expect(await t.run('env | grep -c MUSTER_ || true')).toMatch(/^0\r?$/m);
  });

  it('stty size follows resize', async () => {
    expect(await t.run('stty size')).toMatch(/^30 100\r?$/m);
    t.resize(132, 43);
    await waitFor(async () => /^43 132\r?$/m.test(await t.run('stty size')), 'stty size after resize', 10_000, 50);
  });

  it('Ctrl-C interrupts sleep 100', async () => {
    const since = t.mark;
    t.write('sleep 100; echo after-$?\r');
    await t.waitText('sleep 100', since);
    await new Promise((r) => setTimeout(r, 300));
    t.write('\x03');
    // bash prints nothing for the interrupted list; the prompt comes back and answers.
    expect(await t.run('echo back')).toContain('back');
    expect(t.textSince(since)).not.toContain('after-0');
  });

  it('Chinese text and emoji arrive intact, also split across frames, both ways', async () => {
    expect(await t.run('echo 你好，世界 🚀🎉 ç')).toContain('你好，世界 🚀🎉 ç');
    // Output: one character's bytes in two frames (the shell pauses in the middle of it).
    t.raw = [];
    const out = await t.run("printf 'A\\xe4\\xbd'; sleep 0.4; printf '\\xa0B\\xf0\\x9f'; sleep 0.4; printf '\\x98\\x80C\\n'");
    expect(out).toContain('A你B😀C');
    const splitFrames = t.raw.filter((c) => {
      const last = c[c.length - 1]!;
      return last >= 0x80 && (last & 0xc0) !== 0x80 ? true : (c[c.length - 2]! & 0xe0) === 0xe0 && (last & 0xc0) === 0x80;
    });
    expect(splitFrames.length).toBeGreaterThan(0);
    t.raw = null;
    // Input: a 4-byte emoji split over two input frames.
    const emoji = new TextEncoder().encode('🌍');
    const since = t.mark;
    t.write('echo in:');
    t.write(emoji.subarray(0, 2));
    await new Promise((r) => setTimeout(r, 100));
    t.write(emoji.subarray(2));
    t.write(':done\r');
    await t.waitText(/in:🌍:done\r?\n/, since);
  });

  it('a paste far larger than the tty takes at once reaches the shell whole and in order', async () => {
    // The agent writes input to the PTY directly while node-pty has nothing queued and leaves what
    // the tty does not take to node-pty's queue: a lost, doubled or reordered piece changes the sum.
    const t4 = await client.open(id);
    await t4.run('true');
    const n = 512 * 1024;
    const paste = Buffer.alloc(n);
    for (let i = 0; i < n; i++) paste[i] = 0x21 + ((i * 7 + (i >> 10)) % 90);
    const since = t4.mark;
    // Raw mode: bytes go to `head` as they are (canonical mode would cap a line at 4 KiB).
    t4.write('stty raw -echo; echo RAW""ON; head -c ' + n + ' | sha256sum; stty sane\r');
    await t4.waitText('RAWON', since);
    for (let off = 0; off < n; off += 16 * 1024) t4.write(paste.subarray(off, off + 16 * 1024));
    const want = createHash('sha256').update(paste).digest('hex');
    await t4.waitText(want, since, 60_000);
    t4.close();
  });

  it('close ends the shell and its whole process tree (no orphan, no zombie)', async () => {
    const t2 = await client.open(id);
    // Background jobs make bash print "[1] PID" too: the pid is the last line.
    const lastNumber = (out: string) => Number(/(\d+)\s*$/.exec(out)![1]);
    const shell = lastNumber(await t2.run('echo $$'));
    const bg = lastNumber(await t2.run('sleep 1000 & echo $!'));
    const nohup = lastNumber(await t2.run('nohup sleep 1001 >/dev/null 2>&1 & echo $!'));
    for (const pid of [shell, bg, nohup]) expect(alive(pid), `pid ${pid} alive before close`).toBe(true);
    t2.close();
    const closed = await t2.closedP;
    expect(closed.reason).toMatch(/closed by/);
    await waitFor(() => ![shell, bg, nohup].some(alive), 'every process of the session gone', 10_000, 50);
  });

  it('exit reports the exit code to the console', async () => {
    const t3 = await client.open(id);
    await t3.run('true');
    t3.write('exit 7\r');
    const closed = await t3.closedP;
    expect(closed.exitCode).toBe(7);
    expect(closed.reason).toMatch(/code 7/);
  });
});
