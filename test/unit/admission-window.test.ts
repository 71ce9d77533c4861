/**
 * The Retry-After spread of agents shed for handshakes in progress (server/ws/admission.ts): wide
 * enough for the overload, never wider because a second's welcomes were held up.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Admission } from '../../server/ws/admission.js';

const limits = { knownRate: 1e9, anonRate: 1e9, anonRatePerAddress: 1e9, anonMaxAddresses: 100, maxPending: 500 };

/** Retry-After seconds of `n` upgrades shed now (every slot is taken). */
function shed(a: Admission, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = a.admit(true, '127.0.0.1');
    if (v.ok) throw new Error('admitted: expected a shed');
    expect(v).toMatchObject({ status: 503, reason: 'pending' });
    out.push(Number(v.headers['Retry-After']));
  }
  return out;
}

describe('admission: Retry-After spread for handshakes in progress', () => {
  afterEach(() => vi.useRealTimers());

  it('a second with sheds and no welcome yet (a burst the kernel had queued) spreads the next sheds over seconds, not a minute', () => {
    vi.useFakeTimers();
    vi.setSystemTime(1_000_000);
    const a = new Admission(limits, () => false);
    // Every slot taken; none welcomed in this second (the loop is busy accepting the burst).
    const tickets = Array.from({ length: 500 }, () => {
      const v = a.admit(true, '127.0.0.1');
      if (!v.ok) throw new Error('shed below the limit');
      return v.ticket;
    });
    const first = shed(a, 3000);
    expect(Math.max(...first)).toBeLessThanOrEqual(5);
    vi.setSystemTime(1_001_000);
    // 3,000 shed over 0 welcomed in the previous second: the welcome rate counts as the limit (500/s), so 6 s.
    const next = shed(a, 2000);
    expect(Math.min(...next)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...next)).toBe(6);
    for (const t of tickets) t.done(true);
  });

  it('still widens with a real overload: sheds far above the welcomes measured', () => {
    vi.useFakeTimers();
    vi.setSystemTime(2_000_000);
    const a = new Admission({ ...limits, maxPending: 100 }, () => false);
    // 1,000 welcomed in one second (slots given back and taken again), then every slot taken.
    for (let i = 0; i < 1000; i++) {
      const v = a.admit(true, null);
      if (!v.ok) throw new Error('shed below the limit');
      v.ticket.done(true);
    }
    for (let i = 0; i < 100; i++) if (!a.admit(true, null).ok) throw new Error('shed below the limit');
    vi.setSystemTime(2_001_000);
    shed(a, 40_000);
    vi.setSystemTime(2_002_000);
    // 40,000 shed, 0 welcomed in the previous second: counted as 100/s, capped at 60 s.
    expect(Math.max(...shed(a, 2000))).toBe(60);
  });
});
