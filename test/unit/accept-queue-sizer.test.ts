// The accept queue follows what the event loop accepts (one connection per iteration in Node 20):
// a saturated loop gets a queue it drains within the wait, an idle one the whole MUSTER_LISTEN_BACKLOG,
// growing at once and shrinking only on the largest estimate of the last seconds.
import { describe, expect, it } from 'vitest';
import { AcceptQueueSizer } from '../../server/http/accept-queue.js';

function run(sizer: AcceptQueueSizer, samples: Array<{ perSecond: number; utilization: number; accepts?: number; spoke?: number }>): Array<number | null> {
  let loops = 1000;
  let accepted = 0;
  let spoke = 0;
  sizer.next({ loops, accepted, spoke, utilization: 0 }, 0);
  return samples.map((s) => {
    loops += s.perSecond;
    accepted += s.accepts ?? 0;
    spoke += s.spoke ?? s.accepts ?? 0;
    const n = sizer.next({ loops, accepted, spoke, utilization: s.utilization }, 1);
    if (n !== null) sizer.applied(n);
    return n;
  });
}

describe('AcceptQueueSizer', () => {
  it('starts at the maximum and keeps it while the loop could accept a full queue within the wait', () => {
    const sizer = new AcceptQueueSizer({ max: 65535, min: 256, waitMs: 5000 });
    expect(sizer.length).toBe(65535);
    // Idle: a few iterations a second, at 0.1 % utilization (1 ms busy per 10 iterations: 10,000 a busy second).
    expect(
      run(sizer, [
        { perSecond: 10, utilization: 0.001 },
        { perSecond: 10, utilization: 0.001 },
      ]),
    ).toEqual([null, null]);
    // A loop that did no work at all.
    expect(run(sizer, [{ perSecond: 3, utilization: 0 }])).toEqual([null]);
    expect(sizer.length).toBe(65535);
  });

  it('shrinks to what a saturated loop accepts within the wait, and comes back at once when the loop is free again', () => {
    const sizer = new AcceptQueueSizer({ max: 65535, min: 256, waitMs: 5000 });
    // A cluster node on a starved machine: 80 iterations a second, busy throughout -> 80 × 5 s.
    const saturated = Array.from({ length: 6 }, () => ({ perSecond: 80, utilization: 1 }));
    const moves = run(sizer, saturated);
    expect(moves[0]).toBe(400);
    expect(sizer.length).toBe(400);
    // Half busy at 400 iterations a second: 800 a busy second -> 4,000.
    expect(run(sizer, [{ perSecond: 400, utilization: 0.5 }])).toEqual([4000]);
    // Idle again: the maximum.
    expect(run(sizer, [{ perSecond: 20, utilization: 0.001 }])).toEqual([65535]);
  });

  it('takes the accepts as the rate when the queue never ran dry (an accept in every iteration), whatever the utilization reads', () => {
    const sizer = new AcceptQueueSizer({ max: 65535, min: 256, waitMs: 5000 });
    // A starved machine: 80 iterations, 80 accepts, and the loop reads as 45 % busy (waiting for a CPU
    // after its poll counts as idle): 80 × 5 s, not 178 × 5 s.
    expect(run(sizer, [{ perSecond: 80, accepts: 80, utilization: 0.45 }])).toEqual([400]);
    // Iterations without an accept: the queue ran dry; the loop's busy-time rate applies.
    expect(run(sizer, [{ perSecond: 1000, accepts: 100, utilization: 0.5 }])).toEqual([10_000]);
  });

  it('counts only the accepted connections that spoke: a queue full of connections whose clients gave up shrinks', () => {
    const sizer = new AcceptQueueSizer({ max: 65535, min: 256, waitMs: 10_000 });
    // 350 accepts a second, one per iteration, of which 60 sent their upgrade: 60 × 10 s.
    expect(run(sizer, [{ perSecond: 350, accepts: 350, spoke: 60, utilization: 1 }])).toEqual([600]);
  });

  it('shrinks on the largest estimate of the last five seconds, never below the minimum, and ignores small moves', () => {
    const sizer = new AcceptQueueSizer({ max: 10_000, min: 256, waitMs: 5000 });
    expect(run(sizer, [{ perSecond: 1000, utilization: 1 }])).toEqual([5000]);
    // A second of GC pause (10 iterations) does not close the door: 5,000 is still among the last five.
    expect(
      run(sizer, [
        { perSecond: 10, utilization: 1 },
        { perSecond: 10, utilization: 1 },
      ]),
    ).toEqual([null, null]);
    expect(sizer.length).toBe(5000);
    // 5 % above: noise.
    expect(run(sizer, [{ perSecond: 1050, utilization: 1 }])).toEqual([null]);
    // Starved for five seconds in a row: the minimum (10 × 5 = 50 < 256).
    const moves = run(
      sizer,
      Array.from({ length: 5 }, () => ({ perSecond: 10, utilization: 1 })),
    );
    expect(moves.filter((m) => m !== null)).toEqual([256]);
    expect(sizer.length).toBe(256);
  });
});
