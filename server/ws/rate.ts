/**
 * Token bucket for control messages of one socket: `rate` per second on average, bursts up to
 * `burst`. A peer that exceeds it is cut off (one agent's `labels` or `error` flood is a database
 * write and a console push each; one console's flood is handler work each).
 */
export class MessageBucket {
  private tokens: number;
  private last = Date.now();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }
  /** Spends one token; false when the bucket is empty. */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
  /** Whether the bucket has refilled completely (it then holds nothing a new bucket would not). */
  full(): boolean {
    this.refill();
    return this.tokens >= this.burst;
  }
  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }
}
