import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../../protocol/frames.js';
import { TransferManager } from '../../server/files/transfer.js';

/** A sink that records the frames sent to each agent. */
function sink() {
  const sent: { agentId: string; offset: number; data: Buffer }[] = [];
  return {
    sent,
    sendBinary(agentId: string, buf: Uint8Array) {
      const f = decodeFrame(buf);
      if (f.op !== 'fileData') throw new Error('not file data');
      sent.push({ agentId, offset: f.offset, data: Buffer.from(f.data) });
      return true;
    },
  };
}

const until = async (pred: () => boolean) => {
  const deadline = Date.now() + 5000;
  while (!pred()) {
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
    const m = new TransferManager(s, { chunkBytes: 4096, windowBytes: 16_384, maxInflightBytes: 40_000 }, (err) => { throw err; });
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
      await until(() => s.sent.length > 0);
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
    for (const a of agents) m.end(`t-${a}`);
    expect(m.active).toBe(0);
  });

  it('an ack for another agent or beyond what was sent is ignored; end gives the budget back', async () => {
    const s = sink();
    const m = new TransferManager(s, { chunkBytes: 4096, windowBytes: 8192, maxInflightBytes: 4096 }, (err) => { throw err; });
    m.add('t1', 'a1', file, content.length);
    m.add('t2', 'a2', file, content.length);
    m.ack('a1', 't1', 0);
    m.ack('a2', 't2', 0);
    await until(() => s.sent.length === 1);
    await new Promise((r) => setTimeout(r, 20));
    // a1 took the whole budget; a2 waits.
    expect(s.sent.every((f) => f.agentId === 'a1')).toBe(true);
    m.ack('a2', 't1', 4096); // not a2's transfer
    m.ack('a1', 't1', 999_999); // more than was sent
    expect(m.inflightBytes).toBe(4096);
    m.end('t1');
    await until(() => s.sent.some((f) => f.agentId === 'a2'));
    expect(m.holds('a2', 't2')).toBe(true);
    expect(m.holds('a1', 't2')).toBe(false);
    m.end('t2');
    expect(m.inflightBytes).toBe(0);
  });
});
