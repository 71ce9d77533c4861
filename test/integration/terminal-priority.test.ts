import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, sleep, startAgent, startServer, waitFor } from '../helpers/harness.js';
import { TermClient, type TermView } from '../helpers/terminal-client.js';

const KiB = 1024;

/** Resolves when session `v` has received a chunk containing `ch`, after `since` bytes. */
function echoOf(v: TermView, since: number, ch: string): Promise<void> {
  return v.waitText(ch, since, 60_000).then(() => undefined);
}

/**
 * Interactive traffic first: while session B floods on the same agent (and the same console
 * socket), a keystroke's echo on session A is measured not in time (which depends on the
 * machine's load) but in how much of B's flood reached the console between the key being sent
 * and its echo arriving. Without priority the echo queues behind B's output in flight on both
 * sockets (the agent's 1 MiB flow-control window, the socket buffers); with it, only behind what
 * was already on the wire.
 */
describe("terminal: interactive frames go ahead of another session's flood", () => {
  afterAll(cleanup);

  it("an echo on session A overtakes session B's flood on the same agent and console socket", async () => {
    const s = await startServer();
    const admin = await Api.login(s.url);
    // A wide flow-control window (8 MiB unacknowledged per session) puts megabytes of B's output
    // in flight, so what the echo waits behind depends on priority, not on the window.
    const a = startAgent(s, {
      name: 'term-priority',
      env: { MUSTER_AGENT_TERMINAL_HIGH_WATERMARK: String(8 << 20), MUSTER_AGENT_TERMINAL_LOW_WATERMARK: String(6 << 20) },
    });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const c = await TermClient.connect(s, admin);
    const tA = await c.open(id);
    const tB = await c.open(id);
    await tA.run('true');
    await tB.run('true');
    // A: `cat` in canonical mode, so the tty itself echoes each key.
    let since = tA.mark;
    tA.write('stty echo; exec cat\r');
    await tA.waitText('exec cat', since);
    // B floods and acknowledges as it reads (like xterm.js).
    tB.write('cat /dev/urandom | base64\r');
    await waitFor(() => tB.bytes > 1024 * KiB, 'the flood to flow', 60_000);

    // Each round: the console stops reading for a while (a busy browser tab, a slow link), so B's
    // output fills every buffer up to the agent's window; a key is typed on A; reading resumes and
    // we count B's bytes that arrive before A's echo. That count does not depend on timing: it is
    // what sat in front of the echo.
    const behind: number[] = [];
    for (const k of 'abcdefgh') {
      c.ws.pause();
      await sleep(1500);
      since = tA.mark;
      const echoed = echoOf(tA, since, k);
      tA.write(k);
      await sleep(500);
      const floodBefore = tB.bytes;
      c.ws.resume();
      await echoed;
      behind.push(tB.bytes - floodBefore);
    }
    tB.write('\x03');
    behind.sort((x, y) => x - y);
    const median = behind[Math.floor(behind.length / 2)]!;
    console.log(`flood bytes between key and echo (KiB): ${behind.map((b) => Math.round(b / KiB)).join(' ')}`);
    // While the console did not read, B's output up to the agent's window (6–8 MiB here) piled up
    // in front of it: without priority the echo waited behind all of it (measured 6–8 MiB). With
    // priority, bulk the console has not read is bounded by MUSTER_BULK_WINDOW (256 KiB) plus the
    // socket's MUSTER_BULK_WRITE_THRESHOLD, and the echo goes ahead of the rest.
    expect(median, `median flood bytes that reached the console between a key and its echo: ${median}`).toBeLessThan(1024 * KiB);
    c.close();
  }, 180_000);
});
