import { afterEach, describe, expect, it, vi } from 'vitest';
import type { IPty } from 'node-pty';
import { PtySession } from '../../agent/pty/session.js';
import type { Link } from '../../agent/capability.js';

/** A PTY whose output the test emits, and a link that records every frame the session sends. */
function harness() {
  let onData: ((d: Buffer) => void) | undefined;
  const pty = {
    pid: 0,
    onData: (fn: (d: Buffer) => void) => ((onData = fn), { dispose() {} }),
    onExit: () => ({ dispose() {} }),
    pause() {},
    resume() {},
    write() {},
    resize() {},
  } as unknown as IPty;
  const frames: { bytes: number; bulk: boolean }[] = [];
  const link: Link = {
    send: () => true,
    sendBinary: (buf, opts) => (frames.push({ bytes: buf.length - 2 - 's1'.length, bulk: opts?.bulk === true }), true),
    bufferedAmount: () => 0,
    connected: () => true,
  };
  new PtySession('s1', pty, link, { idleTimeoutMs: 60_000, highWatermark: 1 << 20, lowWatermark: 1 << 19 }, () => {});
  return { out: (n: number) => onData!(Buffer.alloc(n, 0x61)), frames };
}

describe('PtySession output batching', () => {
  afterEach(() => vi.useRealTimers());

  it('sends an echo at once even right after flowing output, and still gathers a flood into frames', () => {
    vi.useFakeTimers();
    const { out, frames } = harness();
    out(4000); // a large read: sent at once, and output is flowing from now on
    expect(frames).toEqual([{ bytes: 4000, bulk: true }]);
    vi.advanceTimersByTime(1);
    out(1); // the echo of a key typed before the next look at the output
    expect(frames).toEqual([
      { bytes: 4000, bulk: true },
      { bytes: 1, bulk: false },
    ]);
    // A flood keeps travelling in gathered frames (the reads after a large one wait for the tick).
    for (let i = 0; i < 10; i++) out(4000);
    out(200);
    expect(frames).toHaveLength(2);
    vi.advanceTimersByTime(2); // the look finds new output...
    vi.advanceTimersByTime(2); // ...then none: what was gathered goes as one frame
    expect(frames.slice(2)).toEqual([{ bytes: 40_200, bulk: true }]);
    vi.advanceTimersByTime(10);
    out(1); // output stopped: the next byte goes at once
    expect(frames.at(-1)).toEqual({ bytes: 1, bulk: false });
  });
});
