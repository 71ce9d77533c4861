import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { pauseTight, resumeTight } from '../../server/ws/read-stop.js';

/** A masked (zero mask, as the agent sends) binary frame of `payload`, as bytes on the wire. */
function frame(payload: Buffer): Buffer {
  const head = payload.length < 126 ? Buffer.from([0x82, 0x80 | payload.length]) : Buffer.from([0x82, 0x80 | 126, payload.length >> 8, payload.length & 255]);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
}

const payload = (tag: number, n: number) => Buffer.alloc(n, tag);

/** Resolves once `cond()` holds, checking every event-loop turn (no timing is asserted). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

type Internal = { _socket: { readableLength: number }; _receiver: { _buffers: Buffer[]; _bufferedBytes: number } };

describe('pauseTight', () => {
  let wss: WebSocketServer | undefined;
  const clients: WebSocket[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.terminate();
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()));
  });

  /** A server whose sockets call `onFirst` on their first message; `received` counts each socket's messages and bytes. */
  async function setup(n: number, onFirst: (ws: WebSocket, i: number) => void) {
    wss = new WebSocketServer({ port: 0, perMessageDeflate: false });
    const server: WebSocket[] = [];
    const received = Array.from({ length: n }, () => ({ messages: 0, bytes: 0, tags: [] as number[] }));
    wss.on('connection', (ws) => {
      const i = server.push(ws) - 1;
      ws.on('message', (d: Buffer) => {
        const r = received[i]!;
        if (r.messages++ === 0) onFirst(ws, i);
        r.bytes += d.length;
        r.tags.push(d[0]!);
      });
    });
    const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
    for (let i = 0; i < n; i++) {
      const c = new WebSocket(url, { perMessageDeflate: false });
      clients.push(c);
      await new Promise((r) => c.once('open', r));
      await until(() => server.length === i + 1);
    }
    return { server, received };
  }

  it('reads nothing more while paused (a plain pause reads ahead), and resume delivers everything in order', async () => {
    // Socket 0: plain ws.pause() (the control: shows the data did reach the server); socket 1: pauseTight.
    const { server, received } = await setup(2, (ws, i) => (i === 0 ? ws.pause() : pauseTight(ws)));
    for (const c of clients) c.send(payload(1, 10));
    await until(() => received.every((r) => r.messages === 1));
    // 2 MB each after the pause: more than the kernel buffers of a loopback pair take at once.
    for (const c of clients) for (let k = 0; k < 64; k++) c.send(payload(2 + (k % 200), 32 * 1024));
    await until(() => (server[0] as unknown as Internal)._socket.readableLength > 0);
    // The same bytes reached socket 1's kernel buffer meanwhile; none were read into the process.
    await new Promise((r) => setTimeout(r, 50));
    expect((server[1] as unknown as Internal)._socket.readableLength).toBe(0);
    expect(received[1]!.messages).toBe(1);

    server[0]!.resume();
    resumeTight(server[1]!);
    await until(() => received.every((r) => r.messages === 65));
    for (const r of received) {
      expect(r.bytes).toBe(10 + 64 * 32 * 1024);
      expect(r.tags).toEqual([1, ...Array.from({ length: 64 }, (_, k) => 2 + (k % 200))]);
    }
  });

  it('copies a frame cut by the last read to its own size, and the frame arrives whole after resume', async () => {
    const { server, received } = await setup(1, (ws) => pauseTight(ws));
    const raw = (clients[0] as unknown as { _socket: import('node:net').Socket })._socket;
    const cut = frame(payload(7, 20_000));
    // One write, so one read: a whole frame (its message pauses the socket) and the first 1,000
    // bytes of the next, a view into the 21 KB read until it is copied.
    raw.write(Buffer.concat([frame(payload(6, 20_000)), cut.subarray(0, 1000)]));
    await until(() => (server[0] as unknown as Internal)._receiver._bufferedBytes > 0);
    await new Promise((r) => process.nextTick(r));
    const held = (server[0] as unknown as Internal)._receiver._buffers;
    expect(held.reduce((n, b) => n + b.length, 0)).toBeGreaterThan(0);
    for (const b of held) expect(b.buffer.byteLength).toBeLessThanOrEqual(2 * b.byteLength);

    raw.write(cut.subarray(1000));
    resumeTight(server[0]!);
    await until(() => received[0]!.messages === 2);
    expect(received[0]!.bytes).toBe(40_000);
    expect(received[0]!.tags).toEqual([6, 7]);
  });
});
