import { retryAfter } from '../http/reject.js';
import { MessageBucket } from './rate.js';

/** A connect-rate bucket: at most `rate` per second on average, bursts up to `rate`. */
const bucket = (rate: number) => new MessageBucket(rate, rate);

/**
 * One token bucket per remote address (anonymous upgrades). Bounded: past `maxKeys` addresses the
 * buckets that have refilled are dropped (they hold no state worth keeping), and if that is not
 * enough, all are (the global anonymous bucket still holds the line).
 */
class PerAddressBuckets {
  private readonly buckets = new Map<string, MessageBucket>();
  constructor(
    private readonly rate: number,
    private readonly maxKeys: number,
  ) {}
  take(addr: string | null): boolean {
    const key = addr ?? '?';
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) this.prune();
      this.buckets.set(key, (b = bucket(this.rate)));
    }
    return b.take();
  }
  private prune(): void {
    for (const [k, b] of this.buckets) if (b.full()) this.buckets.delete(k);
    if (this.buckets.size >= this.maxKeys) this.buckets.clear();
  }
}

export interface AdmissionLimits {
  /** New sockets per second of known agents (valid secret). */
  knownRate: number;
  /** Upgrades per second, in all and per remote address, without a valid agent secret. */
  anonRate: number;
  anonRatePerAddress: number;
  anonMaxAddresses: number;
  /** Agent sockets accepted and not yet welcomed (or closed) at most: the handshakes in progress. */
  maxPending: number;
}

/** A slot of an admitted agent upgrade: given back once, when the agent is welcomed or its socket closes. */
export interface AdmissionTicket {
  /** `welcomed`: the handshake completed (counts toward the node's connect throughput). Idempotent. */
  done(welcomed: boolean): void;
}

export type AdmissionVerdict =
  | { ok: true; ticket: AdmissionTicket }
  | { ok: false; status: 429 | 503; reason: 'draining' | 'pending' | 'rate' | 'address'; message: string; headers: Record<string, string> };

/** Shortest and longest spread of Retry-After when shedding for handshakes in progress, seconds. */
const PENDING_RETRY_MIN_WINDOW = 5;
const PENDING_RETRY_MAX_WINDOW = 60;

/**
 * Admission of agent upgrades, decided before the socket is accepted (nothing is spent on a
 * socket that will be shed): one place for every reason to answer 503 (or 429) + Retry-After.
 *
 * - Starting or draining: 503, come back in 2–5 s (to the next process).
 * - Handshakes in progress (sockets accepted and not yet welcomed) at `maxPending`: 503. The
 *   node is behind on work it already accepted; another socket would only wait in its queue
 *   until the client's handshake timeout, and a timed-out client retries at once. The
 *   Retry-After spread grows with the overload: uniform in [1, W] s with W = sheds per second over
 *   welcomes per second (the previous second; the welcome rate taken as at least maxPending per
 *   second), between 5 and 60, so a fleet much larger than what the node welcomes per second
 *   comes back spread over as many seconds as it needs, and a short burst (a dead node's agents
 *   arriving) within seconds.
 * - Rate: known agents (valid secret) at most `knownRate` per second; everything else
 *   (enrollments, wrong or absent credentials: cheap to send) from its own buckets, per remote
 *   address first (429) and in all (503), so a flood never spends the fleet's reconnect budget.
 */
export class Admission {
  private pendingCount = 0;
  private readonly known: MessageBucket;
  private readonly anon: MessageBucket;
  private readonly anonPerAddress: PerAddressBuckets;
  /** Sheds for handshakes in progress and welcomes, this second and the one before. */
  private second = 0;
  private shedNow = 0;
  private welcomedNow = 0;
  private shedPrev = 0;
  private welcomedPrev = 0;

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly draining: () => boolean,
  ) {
    this.known = bucket(limits.knownRate);
    this.anon = bucket(limits.anonRate);
    this.anonPerAddress = new PerAddressBuckets(limits.anonRatePerAddress, limits.anonMaxAddresses);
  }

  /** Agent sockets accepted and not yet welcomed or closed. */
  get pending(): number {
    return this.pendingCount;
  }

  /**
   * Decides one agent upgrade. `knownAgent`: it presented a valid secret of a known agent (a hash
   * and a map lookup were all it cost); otherwise it is anonymous (an enrollment, or credentials
   * that will be refused).
   */
  admit(knownAgent: boolean, remote: string | null): AdmissionVerdict {
    if (this.draining()) return { ok: false, status: 503, reason: 'draining', message: 'server starting or stopping; retry later', headers: retryAfter(2, 5) };
    if (!knownAgent && !this.anonPerAddress.take(remote)) {
      return {
        ok: false,
        status: 429,
        reason: 'address',
        message: 'too many unauthenticated connections from this address; retry later',
        headers: retryAfter(1, 5),
      };
    }
    if (this.pendingCount >= this.limits.maxPending) {
      this.tick();
      this.shedNow++;
      // The welcome rate is taken as at least the limit per second: a node working through its
      // handshakes turns its slots over more than once a second (an upgrade, a hello and one grouped
      // write each; 300–1,600 welcomes a second measured on 2 loaded cores). A second whose welcomes
      // were held up (the loop busy accepting a burst the kernel had queued, or a slow group commit)
      // counted low, and parked the agents shed meanwhile for up to a minute while the node then idled
      // (with a tenth of the limit, 5,000 agents after a restart at load 12–15: 4,089 back 10 s
      // after listening, the last 911 trickling in over 24 s more; bench/RESULTS.md, Presence).
      const rate = Math.max(this.welcomedPrev, this.limits.maxPending, 1);
      const window = Math.min(PENDING_RETRY_MAX_WINDOW, Math.max(PENDING_RETRY_MIN_WINDOW, Math.ceil(this.shedPrev / rate)));
      return { ok: false, status: 503, reason: 'pending', message: 'server busy with connections in progress; retry later', headers: retryAfter(1, window) };
    }
    if (!(knownAgent ? this.known : this.anon).take()) {
      return {
        ok: false,
        status: 503,
        reason: 'rate',
        message: knownAgent ? 'too many new connections; retry later' : 'too many unauthenticated connections; retry later',
        headers: retryAfter(1, 10),
      };
    }
    this.pendingCount++;
    let open = true;
    return {
      ok: true,
      ticket: {
        done: (welcomed) => {
          if (!open) return;
          open = false;
          this.pendingCount--;
          if (welcomed) {
            this.tick();
            this.welcomedNow++;
          }
        },
      },
    };
  }

  private tick(): void {
    const s = Math.floor(Date.now() / 1000);
    if (s === this.second) return;
    // A quiet second in between: the last figures are older than a second and count as none.
    const consecutive = s === this.second + 1;
    this.shedPrev = consecutive ? this.shedNow : 0;
    this.welcomedPrev = consecutive ? this.welcomedNow : 0;
    this.shedNow = 0;
    this.welcomedNow = 0;
    this.second = s;
  }
}
