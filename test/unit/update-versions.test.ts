import { describe, expect, it } from 'vitest';
import { compareVersions, packageSigningMessage } from '../../protocol/index.js';
import { waveSizes } from '../../server/waves/plan.js';

describe('compareVersions', () => {
  it.each([
    ['1.2.10', '1.2.9', 1],
    ['1.2.0', '1.2', 0],
    ['1.3.0-rc.1', '1.3.0', -1],
    ['1.3.0-rc.10', '1.3.0-rc.9', 1],
    ['1.3.0-alpha', '1.3.0-beta', -1],
    ['2.0.0', '10.0.0', -1],
    ['1.0.0+build.5', '1.0.0', 0],
    ['0.1.0', '0.1.0', 0],
  ] as const)('%s vs %s', (a, b, sign) => {
    expect(Math.sign(compareVersions(a, b))).toBe(sign);
    expect(Math.sign(compareVersions(b, a))).toBe(-sign || 0);
  });
});

describe('waveSizes', () => {
  it('treats entries as cumulative counts or percentages; the last wave takes the rest', () => {
    expect(waveSizes([1, '10%', '50%', '100%'], 40)).toEqual([1, 3, 16, 20]);
    expect(waveSizes([1, '10%', '50%', '100%'], 3)).toEqual([1, 0, 1, 1]);
    expect(waveSizes([1, '100%'], 1)).toEqual([1, 0]);
    expect(waveSizes(['100%'], 0)).toEqual([0]);
    expect(waveSizes([5, 2], 10)).toEqual([5, 5]);
    expect(waveSizes(['10%'], 7)).toEqual([7]);
  });
});

describe('packageSigningMessage', () => {
  it('binds the digest, case-insensitively', () => {
    expect(packageSigningMessage('AB'.repeat(32))).toBe(`muster-agent-package:v1:${'ab'.repeat(32)}`);
  });
});
