/** The dashboard's one-pass selection of the first hosts of a kind (no sort of the whole fleet). */
import { describe, expect, it } from 'vitest';
import { topN } from '../../server/dashboard/read-model.js';

describe('topN', () => {
  it('keeps the n greatest in order and counts every item', () => {
    const xs = [5, 1, 9, 3, 9, 7, 2, 8, 0, 6];
    const { total, top } = topN(xs, 4, (x) => x);
    expect(total).toBe(10);
    expect(top).toEqual([9, 9, 8, 7]);
  });

  it('matches a full sort on a large random input, ties kept in arrival order', () => {
    const xs = Array.from({ length: 20_000 }, (_, i) => ({ i, k: Math.floor(Math.random() * 500) }));
    const { total, top } = topN(xs, 20, (x) => x.k);
    const sorted = [...xs].sort((a, b) => b.k - a.k || a.i - b.i).slice(0, 20);
    expect(total).toBe(20_000);
    expect(top).toEqual(sorted);
  });

  it('handles fewer items than n, and none', () => {
    expect(topN([2, 1], 5, (x) => x)).toEqual({ total: 2, top: [2, 1] });
    expect(topN([], 5, (x: number) => x)).toEqual({ total: 0, top: [] });
  });
});
