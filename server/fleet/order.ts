import { FLEET_SORT_KEYS, type FleetSortKey } from '../../protocol/index.js';
import type { AgentRecord } from './repo.js';

export { FLEET_SORT_KEYS, type FleetSortKey };

/**
 * A total order over agents, shared by `GET /api/agents` and the console's fleet views, so a page
 * of the REST list and a window of the console agree. Keys are computed once per agent and sort
 * with `<` (no collator call per comparison: sorting 100,000 agents by a collator costs seconds);
 * strings are lower-cased and digit runs zero-padded, so `web-2` sorts before `web-10`.
 */
export interface SortEntry {
  readonly id: string;
  /** The sort key's value: a number (metrics, times) or a normalized string. */
  k: number | string;
  /** Tie-break: the normalized name, then the id. */
  t: string;
  /** The agent's status when the entry was made or last checked (counts of a whole-fleet index). */
  st: 'online' | 'offline';
}

const DIGITS = /\d+/g;
/** Case-insensitive, numeric-aware comparison key of a string. */
export function textKey(s: string): string {
  return s.toLowerCase().replace(DIGITS, (d) => (d.length >= 12 ? d : d.padStart(12, '0')));
}

/**
 * Text keys per agent, computed once per value: opening a view over 100,000 agents must not
 * normalize 200,000 strings each time (that, not the sort, dominated). Entries are dropped with
 * their record; a changed value (rename) recomputes its key on next use.
 */
const keyCache = new WeakMap<AgentRecord, Map<string, { src: string; key: string }>>();
function cachedKey(a: AgentRecord, field: string, src: string): string {
  let m = keyCache.get(a);
  if (!m) keyCache.set(a, (m = new Map()));
  const hit = m.get(field);
  if (hit && hit.src === src) return hit.key;
  const key = field === 't' ? `${textKey(src)}\u0000${a.id}` : textKey(src);
  m.set(field, { src, key });
  return key;
}

/** Whether heartbeats (metrics, last seen) change this sort key: such views re-sort on a timer. */
export function sortsByMetrics(key: FleetSortKey): boolean {
  return key === 'cpu' || key === 'mem' || key === 'lastSeen';
}

/** The value of `key` for one agent. Offline agents sort below every online one by cpu/memory. */
export function keyOf(a: AgentRecord, key: FleetSortKey): number | string {
  switch (key) {
    case 'name':
      return '';
    case 'status':
      return a.status;
    case 'hostname':
      return cachedKey(a, 'hostname', a.hostname);
    case 'version':
      return cachedKey(a, 'version', a.version);
    case 'os':
      return cachedKey(a, 'os', `${a.platform}/${a.arch} ${a.os}`);
    case 'cpu':
      return a.status === 'online' ? (a.metrics?.cpuPercent ?? -1) : -1;
    case 'mem':
      return a.status === 'online' && a.metrics ? a.metrics.memUsedBytes : -1;
    case 'lastSeen':
      return a.lastSeenAt ?? 0;
    default: {
      const never: never = key;
      throw new Error(`unknown sort key ${String(never)}`);
    }
  }
}

export function entryOf(a: AgentRecord, key: FleetSortKey): SortEntry {
  return { id: a.id, k: keyOf(a, key), t: cachedKey(a, 't', a.name), st: a.status };
}

/** Comparator of entries, ascending or descending (the tie-break follows the direction too, so `desc` is the exact reverse). */
export function comparator(desc: boolean): (a: SortEntry, b: SortEntry) => number {
  const s = desc ? -1 : 1;
  return (a, b) => {
    if (a.k !== b.k) return (a.k < b.k ? -1 : 1) * s;
    if (a.t !== b.t) return (a.t < b.t ? -1 : 1) * s;
    return 0;
  };
}

/** First index in sorted `arr` whose entry is not before `e` (binary search). */
export function lowerBound(arr: readonly SortEntry[], e: SortEntry, cmp: (a: SortEntry, b: SortEntry) => number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(arr[mid]!, e) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
