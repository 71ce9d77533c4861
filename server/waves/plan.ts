import { z } from 'zod';

/** One wave of a rollout as requested: a count of agents or a percentage of all targets (cumulative). */
export type WaveSpec = number | string;

/**
 * Splits `n` targets into waves. Each spec entry is cumulative: [1, "10%", "50%", "100%"] of 40
 * agents gives waves of 1, 3, 16 and 20. The last wave always takes whatever is left. The result
 * has one size per spec entry (a wave may be empty: 10% of 3 agents is already covered by the
 * first), so wave i is always spec entry i.
 */
export function waveSizes(spec: readonly WaveSpec[], n: number): number[] {
  let done = 0;
  return spec.map((s, i) => {
    let upTo = typeof s === 'number' ? s : Math.ceil((Number.parseFloat(s) / 100) * n);
    if (i === spec.length - 1) upTo = n;
    upTo = Math.min(n, Math.max(done, upTo));
    const size = upTo - done;
    done = upTo;
    return size;
  });
}

/** Request body fields of every run in waves: the waves, as counts or cumulative percentages. */
export const WAVES = z
  .array(z.union([z.number().int().positive(), z.string().regex(/^(100|[1-9]?\d(\.\d+)?)%$/, 'a wave is a count or a percentage like "10%"')]))
  .min(1)
  .max(50)
  .default(['100%']);

/** Request body fields of every run in waves: what happens between two waves. */
export const WAVE_GATE = {
  soakSeconds: z
    .number()
    .int()
    .min(0)
    .max(7 * 86_400)
    .default(0)
    .describe('wait this long after a wave ends before the next starts (at most a week)'),
  approval: z.boolean().default(false).describe('each next wave waits for POST …/approve'),
};
