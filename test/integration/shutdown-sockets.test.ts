/**
 * The shutdown's socket drain (server/ws/sockets.ts `close`): every agent is told `server shutdown`
 * (1001); the wait for the close handshakes ends as soon as the last socket has closed (not at the
 * grace), and a peer that never answers its close frame is cut after the grace. SQLite only: the
 * drain does not touch the database.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanup, startServer } from '../helpers/harness.js';
import { helloAgent } from '../helpers/raw-agent.js';

/** lifecycle.ts CLOSE_GRACE_MS. */
const GRACE_MS = 2000;

/** The drain's own figures: how long it waited for the handshakes, and how many sockets it then cut. */
function drained(output: string): { ms: number; left: number } {
  const line = output.split('\n').find((l) => l.includes('shutdown: terminating sockets that did not close'));
  if (!line) throw new Error(`no drain line in the server output:\n${output.slice(-2000)}`);
  const { ms, left } = JSON.parse(line) as { ms: number; left: number };
  return { ms, left };
}

describe('shutdown: agent sockets', () => {
  afterAll(cleanup);

  it('answered close handshakes end the wait at once, and every agent gets 1001 `server shutdown`', async () => {
    const s = await startServer({ env: { MUSTER_LOG_LEVEL: 'debug' } });
    const agents = await Promise.all([0, 1, 2].map(() => helloAgent(s.wsUrl, { agentId: randomUUID(), enrollToken: s.enrollToken })));
    await s.stop();
    for (const a of agents) expect(await a.closed).toEqual({ code: 1001, reason: 'server shutdown' });
    const d = drained(s.output());
    expect(d.left).toBe(0);
    // Ended by the last socket's close, not by the grace's deadline.
    expect(d.ms).toBeLessThan(GRACE_MS);
  });

  it('a peer that never answers its close frame is cut after the grace, and the shutdown ends', async () => {
    const s = await startServer({ env: { MUSTER_LOG_LEVEL: 'debug' } });
    const ok = await helloAgent(s.wsUrl, { agentId: randomUUID(), enrollToken: s.enrollToken });
    const frozen = await helloAgent(s.wsUrl, { agentId: randomUUID(), enrollToken: s.enrollToken });
    // Its socket is no longer read: the server's close frame is never answered.
    (frozen.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    try {
      await s.stop();
      expect(await ok.closed).toEqual({ code: 1001, reason: 'server shutdown' });
      const d = drained(s.output());
      expect(d.left).toBe(1);
      expect(d.ms).toBeGreaterThanOrEqual(GRACE_MS - 50);
    } finally {
      frozen.ws.terminate();
    }
  });
});
