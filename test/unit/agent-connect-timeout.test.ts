// The agent's connect timeout covers reaching the server (TCP, and TLS on wss://), not the wait for
// the upgrade's answer (agent/connection.ts, UPGRADE_ANSWER_TIMEOUT_MS): a TLS handshake nobody
// answers is given up with ETIMEDOUT; a connected socket is left alone past the timeout.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectWithin } from '../../agent/connection.js';

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
});

async function listen(onSocket: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer(onSocket);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return (srv.address() as net.AddressInfo).port;
}

describe('connectWithin', () => {
  it('gives up a TLS handshake the server never answers, with ETIMEDOUT', async () => {
    const held: net.Socket[] = [];
    const port = await listen((s) => void held.push(s));
    const t0 = Date.now();
    const socket = connectWithin(300, true)({ host: '127.0.0.1', port });
    const err = await new Promise<NodeJS.ErrnoException>((r) => socket.once('error', r));
    expect(err.code).toBe('ETIMEDOUT');
    expect(err.message).toContain('connect timed out');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    for (const s of held) s.destroy();
  });

  it('leaves a connected socket alone once it is connected, however long the server takes to speak', async () => {
    const held: net.Socket[] = [];
    const port = await listen((s) => void held.push(s));
    const socket = connectWithin(200, false)({ host: '127.0.0.1', port });
    await new Promise((r) => socket.once('connect', r));
    let error: Error | null = null;
    socket.on('error', (e) => (error = e));
    await new Promise((r) => setTimeout(r, 500));
    expect(error).toBeNull();
    expect(socket.destroyed).toBe(false);
    socket.destroy();
    for (const s of held) s.destroy();
  });
});
