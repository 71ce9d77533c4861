/**
 * An agent whose connection is established but not yet answered waits its turn: a busy server takes
 * one connection per event-loop iteration from its accept queue (first in, first out), and an agent
 * that gave up after 15 s would rejoin at the back of the queue and never be served. Here a proxy
 * holds every connection 20 s before it reaches the server, as a long accept queue does: the agent
 * connects through its first attempt (with the old 15 s handshake timeout it retried forever).
 */
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { agentId, Api, cleanup, startAgent, startServer } from '../helpers/harness.js';

afterAll(cleanup);

describe('an agent in a long accept queue', () => {
  it('waits for the answer to its upgrade instead of giving up its place after 15 s', async () => {
    const s = await startServer();
    const api = await Api.login(s.url);
    const HOLD_MS = 20_000;
    let held = 0;
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer({ pauseOnConnect: true }, (client) => {
      held++;
      sockets.add(client);
      client.on('error', () => client.destroy());
      setTimeout(() => {
        if (client.destroyed) return;
        const up = net.connect(s.port, '127.0.0.1');
        sockets.add(up);
        up.on('error', () => client.destroy());
        client.on('close', () => up.destroy());
        up.on('close', () => client.destroy());
        client.pipe(up).pipe(client);
        client.resume();
      }, HOLD_MS);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const port = (proxy.address() as net.AddressInfo).port;
    try {
      const a = startAgent(s, { serverUrl: `ws://127.0.0.1:${port}` });
      const id = await agentId(a);
      const t0 = Date.now();
      await api.waitAgent(id, 'online', HOLD_MS + 20_000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(HOLD_MS - 2000);
      // One connection: the agent never abandoned its place.
      expect(held).toBe(1);
      expect(a.output()).not.toContain('timed out');
      await a.stop();
    } finally {
      for (const x of sockets) x.destroy();
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  }, 90_000);
});
