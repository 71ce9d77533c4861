/**
 * uuidv7 (server/db/ids.ts): RFC 9562 version 7 ids for tasks and executions. The format and
 * bits (version 7, variant 10), strictly increasing within a process (many per millisecond, a
 * counter that runs out, a clock that steps back), unique, and the time in the first 48 bits.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { uuidv7 } from '../../server/db/ids.js';

const FORMAT = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const timeOf = (id: string) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);

describe('uuidv7', () => {
  afterEach(() => vi.restoreAllMocks());

  it('makes version 7 ids, unique and strictly increasing, with the time in front', () => {
    const before = Date.now();
    const ids = Array.from({ length: 100_000 }, () => uuidv7());
    const after = Date.now();
    for (const id of ids) expect(FORMAT.test(id), id).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    for (let i = 1; i < ids.length; i++) if (!(ids[i - 1]! < ids[i]!)) throw new Error(`not increasing at ${i}: ${ids[i - 1]} ${ids[i]}`);
    expect(timeOf(ids[0]!)).toBeGreaterThanOrEqual(before);
    // A counter that ran out moves the time on by a millisecond: never far ahead of the clock.
    expect(timeOf(ids.at(-1)!)).toBeLessThanOrEqual(after + 100);
    // The random part is random: the last 12 hex digits of consecutive ids differ.
    expect(new Set(ids.slice(0, 1000).map((id) => id.slice(-12))).size).toBe(1000);
  });

  it('keeps increasing when the clock stands still past the counter, and when it steps back', () => {
    const t = Date.now() + 10_000;
    const clock = vi.spyOn(Date, 'now').mockReturnValue(t);
    const still = Array.from({ length: 10_000 }, () => uuidv7());
    for (let i = 1; i < still.length; i++) expect(still[i - 1]! < still[i]!).toBe(true);
    // 10,000 ids in one millisecond: the 12-bit counter ran out at least twice, each time a ms on.
    expect(timeOf(still.at(-1)!) - t).toBeGreaterThanOrEqual(2);
    clock.mockReturnValue(t - 60_000);
    const back = uuidv7();
    expect(back > still.at(-1)!).toBe(true);
    expect(FORMAT.test(back)).toBe(true);
  });
});
