import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, sleep, startAgent, startServer, waitFor } from '../helpers/harness.js';
import { TermClient } from '../helpers/terminal-client.js';

/** Resident set size of a process in bytes (VmRSS). */
function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

const MiB = 1024 * 1024;

describe('terminal flood: flow control end to end', () => {
  afterAll(cleanup);

  it('a flood keeps server memory bounded while the console stalls, and Ctrl-C still stops it', async () => {
    const s = await startServer();
    const admin = await Api.login(s.url);
    const a = startAgent(s, { name: 'term-flood' });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const c = await TermClient.connect(s, admin);
    const t = await c.open(id);
    await t.run('true');
    const serverPid = s.proc.pid!;
    const base = rss(serverPid);

    // 1. A stalled browser tab: it neither reads its socket nor acknowledges.
    t.holdAcks = true;
    c.ws.pause();
    t.write('cat /dev/urandom | base64\r');
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(150);
      peak = Math.max(peak, rss(serverPid));
    }
    // Without flow control the server would queue the whole flood (tens of MB per second) for the socket.
    expect(peak - base, `server RSS grew ${((peak - base) / MiB).toFixed(1)} MiB while the console stalled`).toBeLessThan(48 * MiB);
    c.ws.resume();
    await sleep(500);
    const held = t.bytes;
    // The agent stopped at its high watermark (1 MiB) plus what was already in flight.
    expect(held, 'bytes delivered while acks are held').toBeLessThan(4 * MiB);
    await sleep(700);
    expect(t.bytes - held, 'no more output while acks are held').toBeLessThan(256 * 1024);

    // 2. The console catches up and acknowledges like xterm.js: the flood flows, memory stays bounded.
    t.holdAcks = false;
    t.ackPending();
    const start = t.bytes;
    peak = 0;
    // At least 3 s of flow, and until 8 MiB went through (a loaded machine may take longer).
    const flowDeadline = Date.now() + 60_000;
    for (let i = 0; i < 20 || (t.bytes - start <= 8 * MiB && Date.now() < flowDeadline); i++) {
      await sleep(150);
      peak = Math.max(peak, rss(serverPid));
    }
    expect(t.bytes - start, 'the flood flows once acknowledged').toBeGreaterThan(8 * MiB);
    // While bytes flow, RSS also holds garbage the GC has not collected yet (seen up to ~50 MiB on a
    // loaded machine); an unbounded relay would hold the whole flood, hundreds of MiB in these 3 s.
    expect(peak - base, `server RSS grew ${((peak - base) / MiB).toFixed(1)} MiB during the flood`).toBeLessThan(96 * MiB);

    // 3. Ctrl-C reaches the shell through the flood and the prompt answers again.
    t.write('\x03');
    const out = await t.run('echo after-flood', 10_000);
    expect(out).toContain('after-flood');
    const settled = t.bytes;
    await sleep(500);
    expect(t.bytes - settled, 'output stopped after Ctrl-C').toBeLessThan(1024);
    t.close();
    await t.closedP;
    await waitFor(async () => (await admin.get(`/api/terminals/${t.sessionId}`)).body.status === 'closed', 'closed');
    const row = (await admin.get(`/api/terminals/${t.sessionId}`)).body;
    expect(row.bytesOut).toBeGreaterThan(8 * MiB);
  });
});
