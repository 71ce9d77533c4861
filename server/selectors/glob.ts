import { SelectorError } from './errors.js';

/** One step of a compiled glob. */
type Step = { kind: 'lit'; ch: string } | { kind: 'one' } | { kind: 'star' } | { kind: 'class'; negated: boolean; ranges: Array<[string, string]> };

/** A compiled glob: `*` any run, `?` one character, `[abc]`/`[a-z]`/`[!abc]` a class; case-insensitive. */
export interface Glob {
  test(s: string): boolean;
}

const lower = (c: string) => c.toLowerCase();

function inClass(step: Extract<Step, { kind: 'class' }>, c: string): boolean {
  // Case-insensitive like the rest of the glob: a character matches if either case is in a range.
  const forms = [c, c.toLowerCase(), c.toUpperCase()];
  let hit = false;
  for (const [lo, hi] of step.ranges) {
    for (const f of forms) {
      if (f >= lo && f <= hi) hit = true;
    }
  }
  return hit !== step.negated;
}

function matchOne(step: Step, c: string): boolean {
  switch (step.kind) {
    case 'lit':
      return step.ch === lower(c);
    case 'one':
      return true;
    case 'class':
      return inClass(step, c);
    case 'star':
      return false;
  }
}

/**
 * Compiles a glob. Matching is iterative with two pointers and backtracks only to the most recent
 * `*` (the classic wildcard algorithm): at worst pattern length × text length steps, never
 * exponential, and no RegExp is ever built from user input. `offset` is the source position of
 * the glob's first character, so errors name a position in the whole selector.
 */
export function compileGlob(glob: string, offset = 0): Glob {
  const chars = Array.from(glob);
  const steps: Step[] = [];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '*') {
      // Consecutive stars are one star: they match exactly the same texts.
      if (steps[steps.length - 1]?.kind !== 'star') steps.push({ kind: 'star' });
    } else if (c === '?') {
      steps.push({ kind: 'one' });
    } else if (c === '[') {
      const end = chars.indexOf(']', i + 2);
      if (end < 0) {
        // No closing bracket: a literal `[`, as shells (and this language before) treat it.
        steps.push({ kind: 'lit', ch: '[' });
        continue;
      }
      let j = i + 1;
      const negated = chars[j] === '!' || chars[j] === '^';
      if (negated) j++;
      const ranges: Array<[string, string]> = [];
      while (j < end) {
        const a = chars[j]!;
        if (chars[j + 1] === '-' && j + 2 < end) {
          const b = chars[j + 2]!;
          if (a > b)
            throw new SelectorError(
              offset + j,
              'a character range in order (like `a-z`)',
              `invalid glob range "${a}-${b}" at position ${offset + j}: the range is out of order`,
            );
          ranges.push([a, b]);
          j += 3;
        } else {
          ranges.push([a, a]);
          j++;
        }
      }
      if (ranges.length === 0) throw new SelectorError(offset + i, 'a non-empty character class', `empty glob character class at position ${offset + i}`);
      steps.push({ kind: 'class', negated, ranges });
      i = end;
    } else {
      steps.push({ kind: 'lit', ch: lower(c) });
    }
  }
  return { test: (s) => matchSteps(steps, Array.from(s)) };
}

function matchSteps(p: Step[], t: string[]): boolean {
  let pi = 0,
    ti = 0;
  let starP = -1,
    starT = 0;
  while (ti < t.length) {
    const step = p[pi];
    if (step?.kind === 'star') {
      starP = pi++;
      starT = ti;
    } else if (step && matchOne(step, t[ti]!)) {
      pi++;
      ti++;
    } else if (starP >= 0) {
      // Let the last star swallow one more character and retry from just after it.
      pi = starP + 1;
      ti = ++starT;
    } else {
      return false;
    }
  }
  while (p[pi]?.kind === 'star') pi++;
  return pi === p.length;
}
