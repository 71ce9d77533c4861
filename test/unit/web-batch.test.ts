import { afterEach, describe, expect, it, vi } from 'vitest';
import { coalesced, frameBatcher } from '../../web/src/composables/batch.js';

describe('console batching utilities', () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it('frameBatcher publishes once per animation frame however often it is asked', () => {
    vi.useFakeTimers();
    const frames: Array<() => void> = [];
    vi.stubGlobal('requestAnimationFrame', (cb: () => void) => frames.push(cb));
    vi.stubGlobal('cancelAnimationFrame', (id: number) => (frames[id - 1] = () => undefined));
    let published = 0;
    const b = frameBatcher(() => published++);
    for (let i = 0; i < 1000; i++) b.schedule();
    expect(frames).toHaveLength(1);
    frames[0]!();
    expect(published).toBe(1);
    // The frame's publish cancelled the fallback timer: no second publish for the same batch.
    vi.advanceTimersByTime(1000);
    expect(published).toBe(1);
    b.schedule();
    expect(frames).toHaveLength(2);
    frames[1]!();
    expect(published).toBe(2);
  });

  it('frameBatcher still publishes when no animation frame comes (hidden page), and cancel drops a batch', () => {
    vi.useFakeTimers();
    vi.stubGlobal('requestAnimationFrame', () => 7);
    vi.stubGlobal('cancelAnimationFrame', () => undefined);
    let published = 0;
    const b = frameBatcher(() => published++, 100);
    b.schedule();
    b.schedule();
    vi.advanceTimersByTime(99);
    expect(published).toBe(0);
    vi.advanceTimersByTime(1);
    expect(published).toBe(1);
    b.schedule();
    b.cancel();
    vi.advanceTimersByTime(1000);
    expect(published).toBe(1);
  });

  it('coalesced runs once per interval for any number of requests, trailing the first', () => {
    vi.useFakeTimers();
    let runs = 0;
    const c = coalesced(() => runs++, 300);
    c.schedule();
    vi.advanceTimersByTime(200);
    c.schedule();
    c.schedule();
    expect(c.pending).toBe(true);
    vi.advanceTimersByTime(100);
    expect(runs).toBe(1);
    expect(c.pending).toBe(false);
    c.schedule();
    c.cancel();
    vi.advanceTimersByTime(1000);
    expect(runs).toBe(1);
  });
});
