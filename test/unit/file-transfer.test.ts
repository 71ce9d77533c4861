import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../../protocol/frames.js';
import type { SendOpts } from '../../protocol/index.js';
import { TransferManager } from '../../server/files/transfer.js';

/**
 * A sink that works like the socket: frames wait until `flush` "writes" them (their bytes are read
 * then, not when they were handed over, so a buffer reused too early shows as corrupt data), and
 * each frame's `done` runs after it is written.
 */
function sink() {
  const sent: { agentId: string; offset: number; data: Buffer; parts: number }[] = [];
  const pending: { agentId: string; parts: readonly Uint8Array[]; done?: () => void }[] = [];
  return {
    sent,
    pending,
    sendBinary(agentId: string, parts: readonly Uint8Array[], opts?: SendOpts) {
      pending.push({ agentId, parts, done: opts?.done });
      return true;
    },
    flush() {
      for (const p of pending.splice(0)) {
        const f = decodeFrame(Buffer.concat(p.parts));
        if (f.op !== 'fileData') throw new Error('not file data');
        sent.push({ agentId: p.agentId, offset: f.offset, data: Buffer.from(f.data), parts: p.parts.length });
        p.done?.();
      }
    },
  };
}

const until = async (pred: () => boolean, s?: { flush(): void }) => {
  const deadline = Date.now() + 5000;
  while ((s?.flush(), !pred())) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 2));
  }
};

describe('TransferManager', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-transfer-'));
  const file = path.join(dir, 'content');
  const content = Buffer.alloc(100_000);
  for (let i = 0; i < content.length; i++) content[i] = i % 251;
  fs.writeFileSync(file, content);

  it('sends nothing before the first ack, keeps each transfer within its window and all of them within the budget, and delivers the exact bytes', async () => {
    const s = sink();
    const m = new TransferManager(s, { chunkBytes: 4096, windowBytes: 16_384, maxInflightBytes: 40_000 }, (err) => {
      throw err;
    });
    const agents = ['a1', 'a2', 'a3', 'a4', 'a5'];
    for (const a of agents) m.add(`t-${a}`, a, file, content.length);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.sent).toHaveLength(0);
    for (const a of agents) m.ack(a, `t-${a}`, 0);
    const received = new Map<string, Buffer[]>(agents.map((a) => [a, []]));
    const acked = new Map<string, number>(agents.map((a) => [a, 0]));
    let maxInflight = 0;
    // Acknowledge like agents do: in order, whatever has arrived, until every transfer is complete.
    while ([...acked.values()].some((n) => n < content.length)) {
      await until(() => s.sent.length > 0, s);
      maxInflight = Math.max(maxInflight, m.inflightBytes);
      expect(m.inflightBytes).toBeLessThanOrEqual(40_000);
      for (const f of s.sent.splice(0)) {
        received.get(f.agentId)!.push(f.data);
        const next = f.offset + f.data.length;
        expect(next - acked.get(f.agentId)!).toBeLessThanOrEqual(16_384);
        acked.set(f.agentId, next);
        m.ack(f.agentId, `t-${f.agentId}`, next);
      }
    }
    for (const a of agents) expect(Buffer.concat(received.get(a)!).equals(content)).toBe(true);
    expect(maxInflight).toBeGreaterThan(16_384); // several transfers were on the way at once
    expect(m.inflightBytes).toBe(0);
    expect(m.bytesSent).toBe(5 * content.length);
    for (const a of agents) m.end(`t-${a}`);
    expect(m.active).toBe(0);
  });

  it('an ack for another agent or beyond what was sent is ignored; end gives the budget back', async () => {
    const s = sink();
    const m = new TransferManager(s, { chunkBytes: 4096, windowBytes: 8192, maxInflightBytes: 4096 }, (err) => {
      throw err;
    });
    m.add('t1', 'a1', file, content.length);
    m.add('t2', 'a2', file, content.length);
    m.ack('a1', 't1', 0);
    m.ack('a2', 't2', 0);
    await until(() => s.sent.length === 1, s);
    await new Promise((r) => setTimeout(r, 20));
    // a1 took the whole budget; a2 waits.
    expect(s.sent.every((f) => f.agentId === 'a1')).toBe(true);
    m.ack('a2', 't1', 4096); // not a2's transfer
    m.ack('a1', 't1', 999_999); // more than was sent
    expect(m.inflightBytes).toBe(4096);
    m.end('t1');
    await until(() => s.sent.some((f) => f.agentId === 'a2'), s);
    expect(m.holds('a2', 't2')).toBe(true);
    expect(m.holds('a1', 't2')).toBe(false);
    m.end('t2');
    expect(m.inflightBytes).toBe(0);
  });

  it('reads each chunk once for transfers at the same place and sends header and shared chunk as two parts of one message', async () => {
    const s = sink();
    const m = new TransferManager(s, { chunkBytes: 4096, windowBytes: 8192, maxInflightBytes: 1 << 20, cacheBytes: 1 << 20 }, (err) => {
      throw err;
    });
    const agents = Array.from({ length: 20 }, (_, i) => `a${i}`);
    for (const a of agents) m.add(`t-${a}`, a, file, content.length);
    for (const a of agents) m.ack(a, `t-${a}`, 0);
    const acked = new Map<string, number>(agents.map((a) => [a, 0]));
    const received = new Map<string, Buffer[]>(agents.map((a) => [a, []]));
    while ([...acked.values()].some((n) => n < content.length)) {
      await until(() => s.sent.length > 0, s);
      for (const f of s.sent.splice(0)) {
        expect(f.parts).toBe(2);
        received.get(f.agentId)!.push(f.data);
        acked.set(f.agentId, f.offset + f.data.length);
        m.ack(f.agentId, `t-${f.agentId}`, f.offset + f.data.length);
      }
    }
    for (const a of agents) expect(Buffer.concat(received.get(a)!).equals(content)).toBe(true);
    expect(m.bytesSent).toBe(20 * content.length);
    expect(m.bytesRead).toBe(content.length); // the cache holds the whole file: read once for 20 hosts
    for (const a of agents) m.end(`t-${a}`);
  });

  it('never reuses a chunk buffer a frame still references, however small the cache', async () => {
    const s = sink();
    // Two chunks of cache for 30 transfers spread over the file: buffers are recycled all the time.
    const m = new TransferManager(s, { chunkBytes: 4096, windowBytes: 8192, maxInflightBytes: 64 * 1024, cacheBytes: 8192 }, (err) => {
      throw err;
    });
    const agents = Array.from({ length: 30 }, (_, i) => `a${i}`);
    const acked = new Map<string, number>();
    const received = new Map<string, Buffer[]>(agents.map((a) => [a, []]));
    agents.forEach((a, i) => {
      m.add(`t-${a}`, a, file, content.length);
      // Start at different places (as after a restart of the agent's temp file, any acked offset is a start).
      acked.set(a, 0);
      if (i % 3 === 0) m.ack(a, `t-${a}`, 0);
    });
    let flushes = 0;
    while ([...acked.values()].some((n) => n < content.length)) {
      // Late starters join while the first ones are far into the file.
      if (++flushes === 5) for (const [i, a] of agents.entries()) if (i % 3 !== 0) m.ack(a, `t-${a}`, 0);
      // Frames wait in the "socket" for a while: the transfer moves on, their buffers must not.
      await new Promise((r) => setTimeout(r, 1));
      await until(() => s.pending.length > 0 || s.sent.length > 0);
      s.flush();
      for (const f of s.sent.splice(0)) {
        received.get(f.agentId)!.push(f.data);
        acked.set(f.agentId, f.offset + f.data.length);
        m.ack(f.agentId, `t-${f.agentId}`, f.offset + f.data.length);
      }
    }
    for (const a of agents) expect(Buffer.concat(received.get(a)!).equals(content)).toBe(true);
    expect(m.bytesRead).toBeGreaterThan(content.length); // the small cache did recycle
    for (const a of agents) m.end(`t-${a}`);
    expect(m.inflightBytes).toBe(0);
  });
});
