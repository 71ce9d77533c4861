/** One wave of a rollout as requested: a count of agents or a percentage of all targets (cumulative). */
export type WaveSpec = number | string;

/**
 * Splits `n` targets into waves. Each spec entry is cumulative: [1, "10%", "50%", "100%"] of 40
 * agents gives waves of 1, 3, 16 and 20. The last wave always takes whatever is left; waves
 * that would be empty are dropped. Returns the size of each wave.
 */
export function waveSizes(spec: readonly WaveSpec[], n: number): number[] {
  const sizes: number[] = [];
  let done = 0;
  spec.forEach((s, i) => {
    let upTo: number;
    if (typeof s === 'number') upTo = s;
    else upTo = Math.ceil((Number.parseFloat(s) / 100) * n);
    if (i === spec.length - 1) upTo = n;
    upTo = Math.min(n, Math.max(done, upTo));
    if (upTo > done) sizes.push(upTo - done);
    done = upTo;
  });
  return sizes;
}
