import { describe, expect, it } from 'vitest';
import { READ_BYTES, ReadGate } from '../../server/exec/read-gate.js';
import type { AgentChannel } from '../../server/fleet/fleet.js';
import type { Logger } from '../../server/log.js';

const log = { info() {}, warn() {}, debug() {}, error() {} } as unknown as Logger;
const turn = () => new Promise((r) => setImmediate(r));

/** Channels that record whether they are read, and the order they were resumed in. */
function channels(n: number) {
  const resumed: string[] = [];
  const chs = Array.from({ length: n }, (_, i) => {
    const ch = {
      linkId: i,
      paused: false,
      pause() {
        ch.paused = true;
      },
      resume() {
        ch.paused = false;
        resumed.push(`a${i}`);
      },
    };
    return ch as typeof ch & AgentChannel;
  });
  return { chs, resumed, reading: () => chs.filter((c) => !c.paused).length };
}

describe('ReadGate', () => {
  it('resumes held sockets oldest first, only as many a turn as the writer has room for', async () => {
    let room = 3 * READ_BYTES;
    const touched: string[] = [];
    const gate = new ReadGate({ touch: (id) => void touched.push(id) }, log, () => room);
    const { chs, resumed, reading } = channels(8);
    // Open: nothing is held; those that deliver now are paused together at the close (a0–a3).
    for (let i = 0; i < 4; i++) gate.admit(`a${i}`, chs[i]!);
    gate.admit('a0', chs[0]!);
    expect(gate.size).toBe(0);
    gate.pressure(true, 0);
    expect(chs.map((c) => c.paused)).toEqual([true, true, true, true, false, false, false, false]);
    // The others as they deliver.
    for (let i = 4; i < 8; i++) gate.admit(`a${i}`, chs[i]!);
    expect(reading()).toBe(0);
    gate.admit('a2', chs[2]!); // already held: stays in its place
    expect(gate.size).toBe(8);

    gate.pressure(false, 0);
    expect(resumed).toEqual(['a0', 'a1', 'a2']);
    expect(touched).toEqual(['a0', 'a1', 'a2']);
    await turn();
    expect(resumed).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'a5']);

    // Resumed ones count as streaming: a0–a5 are paused at the close whether they delivered (a1) or
    // not; a4's agent went away; a6 and a7 stay in line ahead of them.
    gate.admit('a1', chs[1]!);
    gate.forget('a4');
    gate.pressure(true, 0);
    expect(chs.map((c) => c.paused)).toEqual([true, true, true, true, false, true, true, true]);
    await turn();
    expect(resumed.length).toBe(6);
    expect(gate.size).toBe(7);

    room = 0; // at least one a turn, so the gate never stalls
    gate.pressure(false, 0);
    expect(resumed.slice(6)).toEqual(['a6']);
    for (let i = 0; i < 6; i++) await turn();
    expect(resumed.slice(6)).toEqual(['a6', 'a7', 'a0', 'a1', 'a2', 'a3', 'a5']);
    expect(gate.size).toBe(0);
    expect(reading()).toBe(8);

    // Resumed after a window without output (a0, a2, a3, a5: idle): not paused at the next close
    // unless they deliver again; a1 delivered before its last pause, so it counts as streaming.
    gate.admit('a2', chs[2]!);
    gate.pressure(true, 0);
    expect(chs.map((c) => c.paused)).toEqual([false, true, true, false, false, false, true, true]);
  });
});
