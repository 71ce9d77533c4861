import { describe, expect, it, vi } from 'vitest';
import { PriorityWriter, streamKeyOf, WINDOW_STALL_MS, type FrameSocket } from '../../protocol/index.js';

/**
 * A socket whose buffer drains only when the test says so: `bufferedAmount` is what was sent and
 * not flushed; `flush(n)` writes the oldest n frames "to the kernel" and runs their callbacks, as
 * net.Socket does; `wire` is the order frames left the socket. Pings are frames too, and `pongs`
 * answers the pings flushed so far (what a peer that read up to there would do).
 */
class FakeSocket implements FrameSocket {
  readyState = 1;
  pending: Array<{ data: string | Uint8Array; cb: ((err?: Error) => void) | null; ping?: Uint8Array; fin?: boolean }> = [];
  wire: string[] = [];
  readPings: Uint8Array[] = [];
  get bufferedAmount(): number {
    return this.pending.reduce((n, p) => n + (p.ping ? 0 : size(p.data)), 0);
  }
  send(data: string | Uint8Array, opts: { binary: boolean; fin?: boolean }, cb?: (err?: Error) => void): void {
    this.pending.push({ data, cb: cb ?? null, fin: opts.fin });
  }
  ping(data: Uint8Array): void {
    this.pending.push({ data: 'ping', cb: null, ping: data });
  }
  flush(n = Infinity): void {
    const out = this.pending.splice(0, Math.min(n, this.pending.length));
    for (const p of out) {
      if (p.ping) {
        this.readPings.push(p.ping);
        continue;
      }
      this.wire.push(label(p.data));
      p.cb?.();
    }
  }
}

const size = (d: string | Uint8Array) => (typeof d === 'string' ? d.length : d.byteLength);
const label = (d: string | Uint8Array) => (typeof d === 'string' ? d : `bin:${d[0]}:${d.byteLength}`);
const bulk = (tag: number, n = 40_000) => new Uint8Array(n).fill(tag);

describe('PriorityWriter', () => {
  it('writes bulk while the socket holds less than the threshold and queues the rest', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 64 * 1024);
    w.send(bulk(1), { bulk: true, key: 'B' });
    w.send(bulk(2), { bulk: true, key: 'B' }); // 40 KB buffered < 64 KiB: written
    w.send(bulk(3), { bulk: true, key: 'B' }); // 80 KB buffered: queued
    expect(s.pending.length).toBe(2);
    expect(w.queued).toEqual({ bytes: 40_000, frames: 1 });
    expect(w.buffered).toBe(120_000);
  });

  it('sends interactive frames ahead of queued bulk of other streams', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 64 * 1024);
    for (let i = 1; i <= 5; i++) w.send(bulk(i), { bulk: true, key: 'B' });
    w.send('echo-A', { key: 'A' });
    w.send('{"type":"heartbeat"}');
    s.flush();
    // Two bulk frames were already in the socket; the echo and the heartbeat overtook the other three.
    expect(s.wire.slice(0, 4)).toEqual(['bin:1:40000', 'bin:2:40000', 'echo-A', '{"type":"heartbeat"}']);
    s.flush();
    s.flush();
    expect(s.wire).toEqual(['bin:1:40000', 'bin:2:40000', 'echo-A', '{"type":"heartbeat"}', 'bin:3:40000', 'bin:4:40000', 'bin:5:40000']);
    expect(w.queued).toEqual({ bytes: 0, frames: 0 });
  });

  it('keeps the order of a stream: its interactive frame waits behind its own queued bulk', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 64 * 1024);
    for (let i = 1; i <= 4; i++) w.send(bulk(i), { bulk: true, key: 'B' });
    w.send('prompt-B', { key: 'B' });
    w.send(JSON.stringify({ type: 'exec.finished', executionId: 'B' }), { key: streamKeyOf({ executionId: 'B' }) });
    w.send('echo-A', { key: 'A' });
    for (let i = 0; i < 10; i++) s.flush();
    expect(s.wire).toEqual(['bin:1:40000', 'bin:2:40000', 'echo-A', 'bin:3:40000', 'bin:4:40000', 'prompt-B', '{"type":"exec.finished","executionId":"B"}']);
  });

  it("drains the queue from the socket's write callbacks, never stalling", () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 64 * 1024);
    for (let i = 0; i < 50; i++) w.send(bulk(i % 250, 10_000), { bulk: true, key: `k${i % 3}` });
    let rounds = 0;
    while (s.pending.length > 0 && rounds++ < 1000) s.flush(1);
    expect(s.wire.length).toBe(50);
    expect(w.buffered).toBe(0);
    // Same order as sent (one queue).
    expect(s.wire.map((x) => Number(x.split(':')[1]))).toEqual(Array.from({ length: 50 }, (_, i) => i % 250));
  });

  it('bounds the bulk the peer has not read with pings, and moves on when the pong comes', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 1 << 30, 160_000); // threshold out of the way: only the window limits
    for (let i = 1; i <= 10; i++) w.send(bulk(i), { bulk: true, key: 'B' });
    // A ping after every quarter window (40 KB); four frames fill the window.
    expect(s.pending.filter((p) => !p.ping).length).toBe(4);
    expect(w.unread).toBe(160_000);
    w.send('echo-A', { key: 'A' });
    s.flush(); // everything written reached the kernel: the peer has not read it yet
    expect(s.wire).toEqual(['bin:1:40000', 'bin:2:40000', 'bin:3:40000', 'bin:4:40000', 'echo-A']);
    expect(w.queued.frames).toBe(6);
    // The peer read up to the second ping: two frames' worth of window opens.
    w.pong(s.readPings[1]!);
    expect(w.unread).toBe(160_000);
    s.flush();
    expect(s.wire.slice(5)).toEqual(['bin:5:40000', 'bin:6:40000']);
    // Pongs that are not ours (keepalive, liveness) change nothing.
    w.pong(new Uint8Array(0));
    w.pong(new Uint8Array([1, 2, 3, 4, 5, 6]));
    expect(w.queued.frames).toBe(4);
    for (let i = 0; i < 10 && w.queued.frames > 0; i++) {
      for (const p of s.readPings.splice(0)) w.pong(p);
      s.flush();
    }
    for (const p of s.readPings.splice(0)) w.pong(p);
    expect(s.wire.length).toBe(11);
    expect(w.unread).toBe(0);
  });

  it('sends nothing on a closed socket and drops the queue on clear()', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 1000);
    w.send(bulk(1, 2000), { bulk: true });
    w.send(bulk(2, 2000), { bulk: true, key: 'x' });
    expect(w.queued.frames).toBe(1);
    w.clear();
    expect(w.queued).toEqual({ bytes: 0, frames: 0 });
    s.readyState = 3;
    w.send('late');
    s.flush();
    expect(s.wire).toEqual(['bin:1:2000']);
  });

  it('sends a message given in parts as adjacent fragments and calls done once written or dropped', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 3000);
    const done: string[] = [];
    const hdr = (n: number) => new Uint8Array([3, n]);
    w.send([hdr(1), bulk(7, 2000)], { bulk: true, key: 'f', done: () => done.push('f1') }); // written
    w.send([hdr(2), bulk(8, 2000)], { bulk: true, key: 'f', done: () => done.push('f2') }); // written (2002 < 3000 buffered)
    w.send([hdr(3), bulk(9, 2000)], { bulk: true, key: 'f', done: () => done.push('f3') }); // queued
    w.send([hdr(4), bulk(9, 2000)], { bulk: true, key: 'f', done: () => done.push('f4') }); // queued
    w.send('echo-A', { key: 'A' }); // interactive: ahead of the queued bulk, never between two fragments
    expect(s.pending.map((p) => [label(p.data), p.fin])).toEqual([
      ['bin:3:2', false],
      ['bin:7:2000', true],
      ['bin:3:2', false],
      ['bin:8:2000', true],
      ['echo-A', undefined],
    ]);
    expect(done).toEqual([]);
    expect(w.buffered).toBe(4004 + 6 + 4004);
    s.flush(2); // the first message is written: its done runs, the queue moves on
    expect(done).toEqual(['f1']);
    expect(s.pending.map((p) => label(p.data))).toEqual(['bin:3:2', 'bin:8:2000', 'echo-A', 'bin:3:2', 'bin:9:2000']);
    w.clear(); // f4 is dropped unsent: its buffers are free too
    expect(done).toEqual(['f1', 'f4']);
    s.flush();
    expect(done).toEqual(['f1', 'f4', 'f2', 'f3']);
    s.readyState = 3;
    w.send([hdr(5)], { bulk: true, done: () => done.push('closed') });
    expect(done.at(-1)).toBe('closed');
  });

  it('a write error drops what is queued', () => {
    const s = new FakeSocket();
    const w = new PriorityWriter(s, 1000);
    w.send(bulk(1, 2000), { bulk: true });
    w.send(bulk(2, 2000), { bulk: true });
    s.pending[0]!.cb!(new Error('EPIPE'));
    expect(w.queued.frames).toBe(0);
  });
});

describe('PriorityWriter window without pongs', () => {
  it('reopens the window after WINDOW_STALL_MS when the peer never answers its pings', async () => {
    vi.useFakeTimers();
    try {
      const s = new FakeSocket();
      const w = new PriorityWriter(s, 1 << 30, 80_000);
      for (let i = 1; i <= 6; i++) w.send(bulk(i), { bulk: true });
      s.flush();
      expect(s.wire.length).toBe(2);
      vi.advanceTimersByTime(WINDOW_STALL_MS + 10);
      s.flush();
      expect(w.stalls).toBe(1);
      expect(s.wire.length).toBe(4);
      vi.advanceTimersByTime(WINDOW_STALL_MS + 10);
      vi.advanceTimersByTime(WINDOW_STALL_MS + 10);
      s.flush();
      expect(s.wire.length).toBe(6);
      expect(w.queued.frames).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
