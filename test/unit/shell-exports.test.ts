import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellExports } from '../../agent/executor/run.js';

describe("shellExports (a runAs script's environment, sourced by the user's shell)", () => {
  it('round-trips hostile values through /bin/sh literally', () => {
    const env = { A: "it's", B: '"$(id)" `id` $HOME ; rm -rf / \\n', C: 'line1\nline2', D: '', E: "''\\''" };
    const script = `${shellExports(env)}for k in A B C D E; do eval "printf '%s\\\\0' \\"\\$$k\\""; done`;
    const out = execFileSync('/bin/sh', ['-c', script], { encoding: 'utf8' });
    expect(out.split('\0').slice(0, 5)).toEqual(Object.values(env));
  });

  it('refuses a name that is not a shell identifier instead of mangling it', () => {
    expect(() => shellExports({ 'A-B': 'x' })).toThrow(/not a shell identifier/);
    expect(() => shellExports({ 'X=1 Y': 'x' })).toThrow(/not a shell identifier/);
  });
});
