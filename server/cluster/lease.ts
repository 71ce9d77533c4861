import type { KV } from 'nats';
import type { Logger } from '../log.js';

/** The timers that must run once in the cluster, each under its own lease. */
export type LeaseName = 'presence' | 'schedules' | 'notifications' | 'waves';
/** `waves`: the rollout and file distribution engines (server/waves/leased.ts). */
export const LEASE_NAMES: readonly LeaseName[] = ['presence', 'schedules', 'notifications', 'waves'];

/** Whether this node may run a cluster-wide timer now. */
export interface Leases {
  /** True while this node holds the lease (always on a single node). */
  held(name: LeaseName): boolean;
  /** The node holding the lease now as the lease store says (null: nobody; this node's id on a single node). */
  holder(name: LeaseName): Promise<string | null>;
  /** Calls `fn` each time this node takes (true) or loses (false) the lease; returns the unsubscribe function. */
  watch(name: LeaseName, fn: (held: boolean) => void): () => void;
  close(): Promise<void>;
}

/** One node: every lease is always held. */
export class LocalLeases implements Leases {
  constructor(private readonly nodeId = '') {}
  held(): boolean {
    return true;
  }
  async holder(): Promise<string | null> {
    return this.nodeId;
  }
  watch(): () => void {
    return () => {};
  }
  async close(): Promise<void> {}
}

/**
 * One lease in a NATS KV bucket whose entries live `ttlMs` without an update (the bucket's max
 * age). Taken with `create` (fails while another node holds it), renewed with `update` on the
 * revision we wrote (compare-and-set: fails if anyone else wrote since). The holder acts only
 * until `ttlMs * 0.75` after the start of its last successful renewal: a holder that cannot renew
 * (partitioned, frozen) stops acting before the entry expires and another node can take it, so two
 * holders never act at once as long as clocks run at the same rate.
 */
export class KvLease {
  private revision: number | null = null;
  private validUntil = 0;
  private busy = false;

  constructor(
    private readonly kv: KV,
    readonly name: string,
    private readonly nodeId: string,
    private readonly ttlMs: number,
    private readonly log: Logger,
    private readonly onChange: (held: boolean) => void = () => {},
  ) {}

  held(now = Date.now()): boolean {
    return this.revision !== null && now < this.validUntil;
  }

  /** Takes or renews the lease (one KV operation). Never throws. */
  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    const started = Date.now();
    const was = this.held(started);
    const value = new TextEncoder().encode(this.nodeId);
    try {
      if (this.revision !== null) {
        this.revision = await this.kv.update(this.name, value, this.revision);
      } else {
        this.revision = await this.kv.create(this.name, value);
      }
      this.validUntil = started + Math.floor(this.ttlMs * 0.75);
    } catch (err) {
      // Held by another node (create failed), or someone wrote since our revision (update failed),
      // or NATS is away, or the answer came too late: on an event loop busy for seconds (a
      // reconnect storm) the request times out although NATS wrote it. The entry says which.
      const ours = await this.ownEntry();
      if (ours !== null) {
        // Still ours (our write landed, or nobody wrote since our last one): keep acting until the
        // validity of the last renewal we know succeeded, and renew from this revision next tick.
        // A create that landed counts from the next successful update, not from now.
        this.revision = ours;
      } else {
        if (this.revision !== null) this.log.warn({ lease: this.name, err: (err as Error).message }, 'cluster lease lost');
        this.revision = null;
        this.validUntil = 0;
      }
    } finally {
      this.busy = false;
    }
    const is = this.held();
    if (is !== was) {
      if (is) this.log.info({ lease: this.name }, 'cluster lease taken');
      this.onChange(is);
    }
  }

  /** The entry's revision when it holds this node's id (null: another node's, none, or NATS not answering). */
  private async ownEntry(): Promise<number | null> {
    try {
      const e = await this.kv.get(this.name);
      if (!e || e.operation !== 'PUT' || new TextDecoder().decode(e.value) !== this.nodeId) return null;
      return e.revision;
    } catch {
      return null;
    }
  }

  /** Gives the lease up (on shutdown) so another node takes it at once instead of after the TTL. */
  async release(): Promise<void> {
    const rev = this.revision;
    this.revision = null;
    this.validUntil = 0;
    if (rev === null) return;
    try {
      await this.kv.delete(this.name, { previousSeq: rev });
    } catch {
      /* someone else's now, or NATS away: it expires */
    }
  }
}

/** Every lease of this node, renewed every third of the TTL. */
export class KvLeases implements Leases {
  private readonly leases = new Map<string, KvLease>();
  private readonly watchers = new Map<string, Set<(held: boolean) => void>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly kv: KV,
    nodeId: string,
    private readonly ttlMs: number,
    log: Logger,
    names: readonly string[] = LEASE_NAMES,
    onChange?: (name: string, held: boolean) => void,
  ) {
    const changed = (n: string, h: boolean) => {
      onChange?.(n, h);
      for (const fn of [...(this.watchers.get(n) ?? [])]) {
        try {
          fn(h);
        } catch (err) {
          log.error({ err, lease: n }, 'lease watcher failed');
        }
      }
    };
    for (const n of names) this.leases.set(n, new KvLease(kv, n, nodeId, ttlMs, log, (h) => changed(n, h)));
  }

  watch(name: string, fn: (held: boolean) => void): () => void {
    const s = this.watchers.get(name) ?? new Set();
    s.add(fn);
    this.watchers.set(name, s);
    return () => void s.delete(fn);
  }

  async holder(name: string): Promise<string | null> {
    const e = await this.kv.get(name);
    if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
    return new TextDecoder().decode(e.value);
  }

  async start(): Promise<void> {
    await this.tick();
    this.timer = setInterval(() => void this.tick(), Math.max(100, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    await Promise.all([...this.leases.values()].map((l) => l.tick()));
  }

  held(name: string): boolean {
    return this.leases.get(name)?.held() ?? false;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const held = [...this.leases.values()].filter((l) => l.held());
    await Promise.all([...this.leases.values()].map((l) => l.release()));
    // Given up: whoever acts under a lease stops now (on shutdown too).
    for (const l of held) for (const fn of [...(this.watchers.get(l.name) ?? [])]) fn(false);
  }
}
