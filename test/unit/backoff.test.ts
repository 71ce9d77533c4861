import { describe, expect, it } from 'vitest';
import { backoffDelay, parseRetryAfter } from '../../agent/connection.js';

describe('reconnect backoff (full jitter)', () => {
  it('is uniform in [0, min(cap, initial·2^attempt))', () => {
    const caps = [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000];
    caps.forEach((cap, attempt) => {
      expect(backoffDelay(attempt, 1000, 60_000, () => 0)).toBe(0);
      expect(backoffDelay(attempt, 1000, 60_000, () => 0.5)).toBe(cap / 2);
      expect(backoffDelay(attempt, 1000, 60_000, () => 0.999999)).toBe(cap - 1);
    });
  });

  it('never exceeds the cap, even for huge attempt numbers', () => {
    for (const attempt of [30, 31, 100, 1e6]) {
      const d = backoffDelay(attempt, 1000, 60_000, () => 0.999999);
      expect(d).toBeLessThan(60_000);
      expect(Number.isFinite(d)).toBe(true);
    }
  });

  it('spreads a fleet: real randomness covers the whole window', () => {
    const samples = Array.from({ length: 5000 }, () => backoffDelay(3, 1000, 60_000));
    expect(Math.min(...samples)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...samples)).toBeLessThan(8000);
    // Each eighth of the window gets a share (a fixed delay or a narrow jitter would not).
    const buckets = new Array(8).fill(0);
    for (const s of samples) buckets[Math.floor(s / 1000)]++;
    for (const b of buckets) expect(b).toBeGreaterThan(400);
  });
});

describe('Retry-After', () => {
  it('parses delta-seconds and HTTP dates; ignores junk', () => {
    expect(parseRetryAfter('7')).toBe(7);
    expect(parseRetryAfter(' 0 ')).toBe(0);
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30);
    expect(parseRetryAfter('Thu, 01 Jan 2025 00:00:30 GMT', now)).toBe(0);
    expect(parseRetryAfter(undefined)).toBeNull();
    expect(parseRetryAfter('')).toBeNull();
    expect(parseRetryAfter('soon')).toBeNull();
    expect(parseRetryAfter(['1', '2'])).toBeNull();
  });
});
