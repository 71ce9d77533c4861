import type { ConsoleMessage, FleetSortKey, FleetWindowMessage } from '../../protocol/index.js';
import type { Bus } from '../bus/bus.js';
import type { Logger } from '../log.js';
import { compileSelector, SelectorError, type AgentPredicate, type SelectorLimits } from '../selectors/selector.js';
import type { ConsoleChannel } from '../ws/handlers.js';
import type { Fleet } from './fleet.js';
import { comparator, entryOf, keyOf, lowerBound, sortsByMetrics, type SortEntry } from './order.js';
import { agentView, type AgentRecord } from './repo.js';

/** Named limits of the fleet views (config: MUSTER_FLEET_VIEW_*). */
export interface FleetViewLimits {
  /** Views one console socket may hold at once (a page shows one or two). */
  perConsole: number;
  /** How often changed views send their deltas (ms): the server-side "animation frame". */
  tickMs: number;
  /** Views sorted by a heartbeat metric (cpu, memory, last seen) re-sort at most this often (ms). */
  resortMs: number;
  /** A console whose socket buffers more than this many bytes gets its deltas later (coalesced), not dropped. */
  softBufferBytes: number;
}

type Status = 'online' | 'offline';
/** Selector match of an agent in a view's `sel` (by slot). */
const NO_MATCH = 0;
const MATCH_ONLINE = 1;
const MATCH_OFFLINE = 2;
const matchOf = (s: Status): number => (s === 'online' ? MATCH_ONLINE : MATCH_OFFLINE);
const statusOfMatch = (m: number): Status | undefined => (m === MATCH_ONLINE ? 'online' : m === MATCH_OFFLINE ? 'offline' : undefined);

/**
 * One console's view of the fleet: the agents matching its selector and status filter, kept
 * sorted, and the window of them the console shows.
 *
 * A view of the whole fleet in a fixed order (no selector, every status: the agents page as it
 * opens) holds nothing per agent: it reads the shared index of its order (`shared`), reversed when
 * descending, and the index's counts. Any other view holds its own list. Invariants then:
 * `entries` holds exactly the matching agents (sorted, except that a metric-sorted view may lag by
 * up to `resortMs`); `entryAt` holds each one's entry by the agent's slot (FleetViews.slotOf);
 * `sel` holds, by slot, whether the agent matches the selector and under which status it is
 * counted in `counts`. Slots index flat arrays instead of Maps keyed by id: a view over 100,000
 * agents allocated two 100,000-entry Maps per open, which (with their garbage) cost more than the
 * scan itself. `sentIds` is the window the console holds rows for.
 */
class View {
  shared: SortIndex | null = null;
  entries: SortEntry[] = [];
  entryAt: Array<SortEntry | undefined> = [];
  sel: Uint8Array = new Uint8Array(0);
  counts = { online: 0, offline: 0 };
  sentIds: string[] = [];
  sentSet = new Set<string>();
  /** Rows changed since the last message (only those in the window are sent). */
  changed = new Set<string>();
  /** Agents whose membership, counts or position must be re-evaluated at the next tick. */
  pending = new Set<string>();
  resortDue = false;
  lastResort = Date.now();
  seq = 0;
  sentCounts = '';
  readonly cmp: (a: SortEntry, b: SortEntry) => number;

  constructor(
    readonly ch: ConsoleChannel,
    readonly id: string,
    readonly pred: AgentPredicate | null,
    readonly status: 'all' | Status,
    readonly sort: FleetSortKey,
    readonly desc: boolean,
    public offset: number,
    public limit: number,
  ) {
    this.cmp = comparator(desc);
  }

  /** Whether this view is the whole fleet: no selector, no status filter. */
  get wholeFleet(): boolean {
    return this.pred === null && this.status === 'all';
  }

  shows(a: AgentRecord): boolean {
    return this.status === 'all' || a.status === this.status;
  }

  /** How many agents the view lists. */
  get length(): number {
    return this.shared ? this.shared.entries.length : this.entries.length;
  }

  /** The entry at position `i` of the view's order. */
  at(i: number): SortEntry {
    if (!this.shared) return this.entries[i]!;
    const all = this.shared.entries;
    return all[this.desc ? all.length - 1 - i : i]!;
  }

  /** Selector matches by status. */
  get byStatus(): { online: number; offline: number } {
    return this.shared ? this.shared.counts : this.counts;
  }
}

/**
 * The whole fleet in one fixed sort order (name, hostname, version, os, status: keys heartbeats do
 * not change), ascending, shared by every view with that order: opening a view or rebuilding it
 * filters this list instead of sorting the matches (sorting 100,000 string keys cost ~300 ms of
 * CPU per open). Changes are applied lazily: agents that changed wait in `pending` until the next
 * use, which re-positions those whose key changed one by one, or re-sorts once when most of the
 * fleet moved (a storm of renames must not cost one array move per agent).
 */
class SortIndex {
  entries: SortEntry[] = [];
  readonly byId = new Map<string, SortEntry>();
  readonly pending = new Set<string>();
  /** Agents by status (whole-fleet views show these counts). */
  counts = { online: 0, offline: 0 };
  private built = false;
  private readonly cmp = comparator(false);

  /** Full rebuilds (a sort of the whole fleet) so far. */
  rebuilds = 0;

  constructor(readonly sort: FleetSortKey) {}

  /** Brings the index up to date with the fleet and returns it (ascending). */
  sync(agents: ReadonlyMap<string, AgentRecord>): readonly SortEntry[] {
    if (this.built) {
      // Agents whose key did not change keep their place (a reconnect storm changes only the
      // status of each: no move, no re-sort); the others move one by one, unless so many moved
      // that sorting again is cheaper.
      const moved: string[] = [];
      for (const id of this.pending) {
        const old = this.byId.get(id);
        const a = agents.get(id);
        const e = a ? entryOf(a, this.sort) : null;
        if (old && e && e.k === old.k && e.t === old.t) {
          // Same place: only the status may differ (views read k and t of shared entries, never st).
          this.counts[old.st]--;
          this.counts[e.st]++;
          old.st = e.st;
        } else moved.push(id);
      }
      this.pending.clear();
      if (moved.length <= 64 || moved.length <= agents.size / 16) {
        for (const id of moved) this.reposition(id, agents.get(id));
        // Every id that joined or left the fleet is pending (AgentMap.watch): the index holds the
        // fleet. The check stays as a guard (a full rebuild repairs a bug's drift).
        if (this.byId.size === agents.size) return this.entries;
      }
    }
    const entries: SortEntry[] = [];
    const counts = { online: 0, offline: 0 };
    this.byId.clear();
    for (const a of agents.values()) {
      const e = entryOf(a, this.sort);
      entries.push(e);
      counts[a.status]++;
      this.byId.set(a.id, e);
    }
    entries.sort(this.cmp);
    this.entries = entries;
    this.counts = counts;
    this.built = true;
    this.rebuilds++;
    this.pending.clear();
    return entries;
  }

  private reposition(id: string, a: AgentRecord | undefined): void {
    const old = this.byId.get(id);
    const e = a ? entryOf(a, this.sort) : null;
    if (old) this.counts[old.st]--;
    if (e) this.counts[e.st]++;
    if (old) {
      const i = lowerBound(this.entries, old, this.cmp);
      this.entries.splice(this.entries[i] === old ? i : this.entries.indexOf(old), 1);
      this.byId.delete(id);
    }
    if (e) {
      this.entries.splice(lowerBound(this.entries, e, this.cmp), 0, e);
      this.byId.set(id, e);
    }
  }
}

/**
 * Server-side fleet views for consoles (`fleet.open`, `fleet.scroll`, `fleet.close`): the server
 * keeps each console's filtered, sorted list and sends only its window plus counts, then deltas
 * for what the console is looking at, batched per tick. Costs: a heartbeat is one set lookup per
 * view (its row is sent only when it is in a window; a view sorted by a metric re-sorts at most
 * every `resortMs`); a status or fact change re-positions one entry (binary search); opening a
 * view of the whole fleet in a fixed order reads the shared index (kept from start, see
 * `prepare`); opening any other view scans the fleet once.
 */
export class FleetViews {
  private readonly byConsole = new Map<ConsoleChannel, Map<string, View>>();
  private readonly dirty = new Set<View>();
  /** Fleet-wide orders for the sort keys heartbeats do not change (the default one made at start, others on first use). */
  private readonly indexes = new Map<FleetSortKey, SortIndex>();
  /** A small integer per agent id, for the views' flat per-agent arrays; freed slots are reused. */
  private readonly slots = new Map<string, number>();
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private timer: NodeJS.Timeout | undefined;
  private indexTimer: NodeJS.Timeout | undefined;
  private readonly unsubs: Array<() => void> = [];

  constructor(private readonly deps: { fleet: Fleet; bus: Bus; log: Logger; selectorLimits: SelectorLimits; limits: FleetViewLimits }) {
    const changed = (id: string) => {
      for (const idx of this.indexes.values()) idx.pending.add(id);
      this.syncIndexesSoon();
      for (const views of this.byConsole.values()) {
        for (const v of views.values()) {
          v.pending.add(id);
          this.mark(v);
        }
      }
    };
    const { bus } = deps;
    this.unsubs.push(
      // Every id that joins or leaves the fleet's map, announced or not (an enrollment in flight).
      deps.fleet.agents.watch(changed),
      bus.subscribe('agent.online', (p) => changed(p.agent.id)),
      bus.subscribe('agent.offline', (p) => changed(p.agentId)),
      bus.subscribe('agent.changed', (p) => changed(p.agent.id)),
      bus.subscribe('agent.removed', (p) => {
        changed(p.agentId);
        this.release(p.agentId);
      }),
      // Heartbeats (batched per presence flush): O(1) per agent per view.
      bus.subscribe('agent.metrics', (p) => {
        for (const views of this.byConsole.values()) {
          for (const v of views.values()) {
            let hit = false;
            for (const it of p.items) {
              if (v.sentSet.has(it.agentId)) {
                v.changed.add(it.agentId);
                hit = true;
              }
            }
            if (sortsByMetrics(v.sort) && p.items.length) {
              v.resortDue = true;
              hit = true;
            }
            if (hit) this.mark(v);
          }
        }
      }),
    );
  }

  /** The console message handlers of this capability. */
  handlers() {
    return {
      'fleet.open': (ch: ConsoleChannel, m: ConsoleMessage<'fleet.open'>) => this.open(ch, m),
      'fleet.scroll': (ch: ConsoleChannel, m: ConsoleMessage<'fleet.scroll'>) => this.scroll(ch, m),
      'fleet.close': (ch: ConsoleChannel, m: ConsoleMessage<'fleet.close'>) => this.close(ch, m.view),
    };
  }

  /**
   * Builds the index of the order the agents page opens with (by name) once the fleet is loaded,
   * so the first console does not pay for it (sorting 100,000 agents, with the JIT still cold, took
   * most of a second); it is kept up to date lazily from then on.
   */
  prepare(): void {
    this.index('name').sync(this.deps.fleet.agents);
  }

  /**
   * Applies changes to the indexes within a tick even when no view asks: a reconnect storm after a
   * restart (every agent's status) is absorbed as it arrives instead of by the next console to open.
   */
  private syncIndexesSoon(): void {
    if (this.indexTimer || this.indexes.size === 0) return;
    this.indexTimer = setTimeout(() => {
      this.indexTimer = undefined;
      for (const idx of this.indexes.values()) idx.sync(this.deps.fleet.agents);
    }, this.deps.limits.tickMs);
    this.indexTimer.unref();
  }

  /** Full rebuilds of the shared indexes so far (each a sort of the whole fleet). */
  get indexRebuilds(): number {
    let n = 0;
    for (const idx of this.indexes.values()) n += idx.rebuilds;
    return n;
  }

  /** Views open right now (all consoles). */
  get size(): number {
    let n = 0;
    for (const v of this.byConsole.values()) n += v.size;
    return n;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.indexTimer);
    this.indexTimer = undefined;
    for (const u of this.unsubs.splice(0)) u();
    this.byConsole.clear();
    this.indexes.clear();
    this.dirty.clear();
  }

  private index(sort: FleetSortKey): SortIndex {
    let idx = this.indexes.get(sort);
    if (!idx) this.indexes.set(sort, (idx = new SortIndex(sort)));
    return idx;
  }

  private slotOf(id: string): number {
    let s = this.slots.get(id);
    if (s === undefined) {
      s = this.freeSlots.pop() ?? this.nextSlot++;
      this.slots.set(id, s);
    }
    return s;
  }

  /** An agent left the fleet: every view forgets it now, so its slot can go to another agent. */
  private release(id: string): void {
    const s = this.slots.get(id);
    if (s === undefined) return;
    for (const views of this.byConsole.values()) {
      for (const v of views.values()) if (!v.shared) this.reposition(v, id, undefined);
    }
    this.slots.delete(id);
    this.freeSlots.push(s);
  }

  private open(ch: ConsoleChannel, m: ConsoleMessage<'fleet.open'>): void {
    let pred: AgentPredicate | null = null;
    if (m.selector.trim() !== '') {
      try {
        pred = compileSelector(m.selector, this.deps.selectorLimits);
      } catch (err) {
        if (err instanceof SelectorError) {
          ch.send({ type: 'error', code: 'selector_syntax', message: err.message, ref: m.ref, position: err.position, expected: err.expected });
          return;
        }
        throw err;
      }
    }
    let views = this.byConsole.get(ch);
    if (!views) {
      this.byConsole.set(ch, (views = new Map()));
      ch.onClose(() => {
        for (const v of this.byConsole.get(ch)?.values() ?? []) this.dirty.delete(v);
        this.byConsole.delete(ch);
        this.idle();
      });
    }
    const prev = views.get(m.view);
    if (!prev && views.size >= this.deps.limits.perConsole) {
      ch.send({ type: 'error', code: 'limit_exceeded', message: `at most ${this.deps.limits.perConsole} fleet views per console`, ref: m.ref });
      return;
    }
    if (prev) this.dirty.delete(prev);
    const v = new View(ch, m.view, pred, m.status, m.sort, m.desc, m.offset, m.limit);
    this.rebuild(v, prev);
    views.set(m.view, v);
    this.send(v, true, m.ref);
    this.ensureTimer();
  }

  private scroll(ch: ConsoleChannel, m: ConsoleMessage<'fleet.scroll'>): void {
    const v = this.byConsole.get(ch)?.get(m.view);
    if (!v) {
      ch.send({ type: 'error', code: 'not_found', message: `no fleet view ${m.view}` });
      return;
    }
    v.offset = m.offset;
    v.limit = m.limit;
    // Answered at once (not at the next tick): the console is waiting for rows to paint.
    this.flush(v);
  }

  private close(ch: ConsoleChannel, view: string): void {
    const views = this.byConsole.get(ch);
    const v = views?.get(view);
    if (!v) return;
    views!.delete(view);
    this.dirty.delete(v);
    this.idle();
  }

  private mark(v: View): void {
    this.dirty.add(v);
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.deps.limits.tickMs);
    this.timer.unref();
  }

  /** No views left: the tick stops. */
  private idle(): void {
    if (this.byConsole.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    for (const v of [...this.dirty]) {
      try {
        this.flush(v);
      } catch (err) {
        this.dirty.delete(v);
        this.deps.log.error({ err, view: v.id }, 'fleet view update failed');
      }
    }
  }

  /** Applies what changed to `v` and sends the console what it needs; keeps `v` dirty if the socket is backed up. */
  private flush(v: View): void {
    if (v.ch.bufferedAmount() > this.deps.limits.softBufferBytes) {
      this.dirty.add(v);
      return;
    }
    this.dirty.delete(v);
    const { fleet } = this.deps;
    if (v.shared) {
      // The shared index re-positions what changed (once for every view that follows it).
      v.shared.sync(fleet.agents);
      for (const id of v.pending) if (v.sentSet.has(id)) v.changed.add(id);
      v.pending.clear();
    } else if (v.pending.size > 64 && v.pending.size > fleet.agents.size / 16) {
      // Many changes at once (a reconnect storm): one rebuild is cheaper than many re-positions.
      this.rebuild(v);
    } else {
      for (const id of v.pending) this.reposition(v, id, fleet.get(id));
      v.pending.clear();
    }
    if (v.resortDue) {
      const now = Date.now();
      if (now - v.lastResort >= this.deps.limits.resortMs) this.resort(v, now);
      else this.dirty.add(v); // due later: stays dirty until then
    }
    this.send(v, false);
  }

  /**
   * Membership, counts and order from scratch. A whole-fleet view in a fixed order follows the
   * shared index and holds nothing itself. Other views in a fixed order filter the shared index
   * (already sorted; the k and t of its entries are never mutated, so views may hold them); views
   * sorted by a heartbeat metric sort their matches.
   */
  private rebuild(v: View, replaced?: View): void {
    const { agents } = this.deps.fleet;
    v.pending.clear();
    v.resortDue = false;
    v.lastResort = Date.now();
    // Rows of the window may have changed in any way: send them all again.
    for (const id of v.sentSet) v.changed.add(id);
    if (v.wholeFleet && !sortsByMetrics(v.sort)) {
      v.shared = this.index(v.sort);
      v.shared.sync(agents);
      v.entries = [];
      v.entryAt = [];
      v.sel = new Uint8Array(0);
      return;
    }
    v.shared = null;
    const entries: SortEntry[] = [];
    const counts = { online: 0, offline: 0 };
    const cap = Math.max(this.nextSlot, agents.size) + 64;
    let sel: Uint8Array;
    let entryAt: Array<SortEntry | undefined>;
    if (replaced && !replaced.shared && replaced.sel.length > 0) {
      // The view this one replaces (a new filter typed) is dropped: its arrays are reused, cleared
      // at the cost of its matches rather than allocated at the fleet's size.
      sel = replaced.sel.fill(NO_MATCH);
      entryAt = replaced.entryAt;
      for (const e of replaced.entries) {
        const s = this.slots.get(e.id);
        if (s !== undefined) entryAt[s] = undefined;
      }
      replaced.entries = [];
      replaced.entryAt = [];
      replaced.sel = new Uint8Array(0);
    } else {
      sel = new Uint8Array(cap);
      // Filled, not holey: V8 keeps an array this long as a flat store only when it has no holes.
      entryAt = new Array<SortEntry | undefined>(cap).fill(undefined);
    }
    const { pred } = v;
    const take = (a: AgentRecord, e: SortEntry | null): void => {
      if (pred && !pred(a)) return;
      const s = this.slotOf(a.id);
      if (s >= sel.length) sel = grown(sel, this.nextSlot);
      sel[s] = matchOf(a.status);
      counts[a.status]++;
      if (!v.shows(a)) return;
      e ??= entryOf(a, v.sort);
      entries.push(e);
      entryAt[s] = e;
    };
    if (sortsByMetrics(v.sort)) {
      for (const a of agents.values()) take(a, null);
      entries.sort(v.cmp);
    } else {
      const sorted = this.index(v.sort).sync(agents);
      // Descending is the exact reverse of ascending (the comparator's tie-break follows the direction).
      for (let n = sorted.length, i = 0; i < n; i++) {
        const e = sorted[v.desc ? n - 1 - i : i]!;
        const a = agents.get(e.id);
        if (a) take(a, e);
      }
    }
    v.entries = entries;
    v.entryAt = entryAt;
    v.sel = sel;
    v.counts = counts;
  }

  /** Re-evaluates one agent of a view with its own list: counts, membership and position (binary search; O(log n) plus a move). */
  private reposition(v: View, id: string, a: AgentRecord | undefined): void {
    // An agent never seen and not in the fleet (or already released): nothing holds it.
    if (!a && !this.slots.has(id)) return;
    const s = this.slotOf(id);
    if (s >= v.sel.length) v.sel = grown(v.sel, this.nextSlot);
    const was = statusOfMatch(v.sel[s]!);
    const now = a && (!v.pred || v.pred(a)) ? a.status : undefined;
    if (was !== now) {
      if (was) v.counts[was]--;
      if (now) v.counts[now]++;
      v.sel[s] = now ? matchOf(now) : NO_MATCH;
    }
    const old = v.entryAt[s];
    const inView = a !== undefined && now !== undefined && v.shows(a);
    if (old && inView) {
      const k = keyOf(a, v.sort);
      const e = entryOf(a, v.sort);
      // A heartbeat-sorted view keeps the old key until its next re-sort (its order is lazy).
      if ((k === old.k || sortsByMetrics(v.sort)) && e.t === old.t) {
        v.changed.add(id);
        return;
      }
    }
    if (old) {
      this.remove(v, old);
      v.entryAt[s] = undefined;
    }
    if (inView) {
      const e = entryOf(a, v.sort);
      v.entries.splice(lowerBound(v.entries, e, v.cmp), 0, e);
      v.entryAt[s] = e;
    }
    v.changed.add(id);
  }

  private remove(v: View, e: SortEntry): void {
    let i = lowerBound(v.entries, e, v.cmp);
    // A metric-sorted view between re-sorts is not exactly ordered: fall back to a scan.
    if (v.entries[i] !== e) i = v.entries.indexOf(e);
    if (i >= 0) v.entries.splice(i, 1);
  }

  private resort(v: View, now: number): void {
    const { fleet } = this.deps;
    for (const e of v.entries) {
      const a = fleet.get(e.id);
      if (a) e.k = keyOf(a, v.sort);
    }
    v.entries.sort(v.cmp);
    v.resortDue = false;
    v.lastResort = now;
  }

  /** Sends the window: everything (`reset`), or what changed since the last message, or nothing. */
  private send(v: View, reset: boolean, ref?: string): void {
    const { fleet } = this.deps;
    const matching = v.length;
    const ids: string[] = [];
    for (let i = v.offset, end = Math.min(matching, v.offset + v.limit); i < end; i++) ids.push(v.at(i).id);
    const idsChanged = reset || ids.length !== v.sentIds.length || ids.some((id, i) => id !== v.sentIds[i]);
    const rows = [];
    for (const id of ids) {
      if (!reset && v.sentSet.has(id) && !v.changed.has(id)) continue;
      const a = fleet.get(id);
      if (a) rows.push(agentView(a));
    }
    v.changed.clear();
    const byStatus = v.byStatus;
    const counts = `${fleet.agents.size} ${matching} ${byStatus.online} ${byStatus.offline}`;
    if (!idsChanged && rows.length === 0 && counts === v.sentCounts) return;
    v.sentCounts = counts;
    if (idsChanged) {
      v.sentIds = ids;
      v.sentSet = new Set(ids);
    }
    const msg: FleetWindowMessage = {
      type: 'fleet.window',
      view: v.id,
      seq: ++v.seq,
      total: fleet.agents.size,
      matching,
      byStatus: { ...byStatus },
      offset: v.offset,
      limit: v.limit,
      rows,
      ...(reset ? { reset: true } : {}),
      ...(ref !== undefined ? { ref } : {}),
      ...(idsChanged ? { ids } : {}),
    };
    v.ch.send(msg);
  }
}

/** `a` copied into a larger array (room for `atLeast` slots and then some). */
function grown(a: Uint8Array, atLeast: number): Uint8Array {
  const b = new Uint8Array(Math.max(atLeast + 64, a.length * 2));
  b.set(a);
  return b;
}
