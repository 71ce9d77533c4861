/** Something the pinger can ping (an agent link once it is registered). */
export interface Pingable {
  /** Sends one RTT ping unless one is outstanding or the socket is not open; true when sent. */
  ping(): boolean;
}

/**
 * Server → agent RTT pings for the whole node from one timer: every agent at most once per
 * `intervalMs`, and at most `ratePerSec` pings a second across the node (round-robin), so a large
 * fleet's RTT metric costs a bounded number of socket writes and reads, and no timer per socket.
 * Liveness never depends on these pings (missed heartbeats do; the agent pings for its own check).
 */
export class Pinger {
  private readonly links = new Set<Pingable>();
  private cursor: Iterator<Pingable> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private readonly tickMs: number;

  constructor(
    private readonly intervalMs: number,
    private readonly ratePerSec: number,
  ) {
    this.tickMs = Math.min(1000, Math.max(10, intervalMs));
  }

  add(l: Pingable): void {
    if (this.intervalMs <= 0 || this.ratePerSec <= 0) return;
    this.links.add(l);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
  }

  delete(l: Pingable): void {
    this.links.delete(l);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Pings the next links in turn: as many as the interval asks for this tick, within the rate. */
  private tick(): void {
    const size = this.links.size;
    if (size === 0) return;
    const due = Math.ceil((size * this.tickMs) / this.intervalMs);
    const n = Math.min(size, due, Math.max(1, Math.floor((this.ratePerSec * this.tickMs) / 1000)));
    for (let i = 0; i < n; i++) {
      let r = this.cursor?.next();
      if (!r || r.done) {
        this.cursor = this.links.values();
        r = this.cursor.next();
        if (r.done) return;
      }
      r.value.ping();
    }
  }
}
