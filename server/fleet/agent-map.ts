import type { AgentRecord } from './repo.js';

/**
 * The fleet's records by id: a Map that tells its watchers every id that joins or leaves it (a set
 * of a new id, a delete, a clear). Indexes over the fleet (FleetViews) follow its membership from
 * here rather than from bus events, which a record does not get until its agent is welcomed: an
 * enrollment in flight is in the map a while before anyone announces it, and an index that found
 * the map larger than itself had to rebuild (and re-sort) the whole fleet, on every tick of an
 * enrollment storm (bench/RESULTS.md, Cluster, session 16: 31 % of a cluster node's CPU).
 */
export class AgentMap extends Map<string, AgentRecord> {
  private watchers: Array<(id: string) => void> = [];

  /** Calls `fn` with each id that joins or leaves the map, synchronously; returns the unsubscribe. */
  watch(fn: (id: string) => void): () => void {
    this.watchers = [...this.watchers, fn];
    return () => void (this.watchers = this.watchers.filter((w) => w !== fn));
  }

  override set(id: string, rec: AgentRecord): this {
    const joined = !super.has(id);
    super.set(id, rec);
    // `watchers` is undefined while Map's constructor runs (no records are passed to it here).
    if (joined && this.watchers) for (const w of this.watchers) w(id);
    return this;
  }

  override delete(id: string): boolean {
    if (!super.delete(id)) return false;
    for (const w of this.watchers) w(id);
    return true;
  }

  override clear(): void {
    const ids = this.watchers.length ? [...this.keys()] : [];
    super.clear();
    for (const id of ids) for (const w of this.watchers) w(id);
  }
}
