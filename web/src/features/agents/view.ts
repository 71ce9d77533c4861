/**
 * A server-side fleet view (protocol/README.md, "Fleet views"): the server filters and sorts the
 * fleet and sends this page only the window it shows plus counts, then deltas. The page asks for
 * the rows around what is on screen (`show`), with a margin so that scrolling a little needs no
 * round trip, and re-opens the view after every reconnect and whenever the filter or sort changes.
 */
import { onScopeDispose, ref, shallowRef, watch, type Ref } from 'vue';
import type { FleetSortKey, FleetWindowMessage } from '../../../../protocol/console-messages';
import type { AgentView } from '../../../../protocol/rest';
import { onMessage, onReady, send, socketState } from '../../composables/socket';
import type { SelectorProblem } from './selector';

export interface FleetViewParams {
  selector: string;
  status: 'all' | 'online' | 'offline';
  sort: FleetSortKey;
  desc: boolean;
}

let nextView = 0;
/**
 * Performance marks of the page's first view (`muster:fleet-open` sent, `muster:fleet-window`
 * answered): bench/console.mjs reads them to say where a cold load's time goes.
 */
const firstMarks = new Set<string>();
function markOnce(name: string): void {
  if (firstMarks.has(name)) return;
  firstMarks.add(name);
  performance.mark(name);
}
/** Rows fetched beyond each edge of the screen, and the most one window holds (server: 500). */
const MARGIN = 60;
const MAX_WINDOW = 400;

export function useFleetView(params: Readonly<Ref<FleetViewParams>>, opts: { initialRows?: number } = {}) {
  const view = `v${++nextView}`;
  /** The rows the server sent, by id (only the window's are kept). */
  const rows = new Map<string, AgentView>();
  /** Bumped when anything shown changed (rows are not reactive themselves: one update per message). */
  const version = shallowRef(0);
  const ids = shallowRef<string[]>([]);
  const offset = ref(0);
  const total = ref(0);
  const matching = ref(0);
  const byStatus = ref({ online: 0, offline: 0 });
  const loaded = ref(false);
  const loading = ref(false);
  const problem = ref<SelectorProblem | null>(null);
  let seq = 0;
  let openRef = '';
  let refs = 0;
  /** What the screen shows: [first, first + count). */
  let first = 0;
  let count = opts.initialRows ?? 40;
  let reqOffset = 0;
  let reqLimit = Math.min(MAX_WINDOW, count + 2 * MARGIN);
  let scrollTimer: ReturnType<typeof setTimeout> | null = null;
  let lastScroll = 0;

  function windowFor(): { offset: number; limit: number } {
    const limit = Math.min(MAX_WINDOW, count + 2 * MARGIN);
    return { offset: Math.max(0, first - MARGIN), limit };
  }

  function open(): void {
    const p = params.value;
    const w = windowFor();
    reqOffset = w.offset;
    reqLimit = w.limit;
    openRef = `${view}:${++refs}`;
    loading.value = true;
    send({ type: 'fleet.open', ref: openRef, view, selector: p.selector, status: p.status, sort: p.sort, desc: p.desc, offset: w.offset, limit: w.limit });
    markOnce('muster:fleet-open');
  }

  onMessage('fleet.window', (m: FleetWindowMessage) => {
    if (m.view !== view) return;
    if (m.reset) {
      // Only the answer to the latest open counts (an older one may arrive after a quick retype).
      if (m.ref !== openRef) return;
      markOnce('muster:fleet-window');
      rows.clear();
      loading.value = false;
      loaded.value = true;
      problem.value = null;
    } else if (m.seq <= seq) return;
    seq = m.seq;
    total.value = m.total;
    matching.value = m.matching;
    byStatus.value = m.byStatus;
    offset.value = m.offset;
    for (const r of m.rows) rows.set(r.id, r);
    if (m.ids) {
      ids.value = m.ids;
      const keep = new Set(m.ids);
      for (const id of rows.keys()) if (!keep.has(id)) rows.delete(id);
    }
    version.value++;
  });
  onMessage('error', (m) => {
    if (m.ref !== openRef || !openRef) return;
    loading.value = false;
    if (m.code === 'selector_syntax') {
      problem.value = { message: m.message, position: m.position ?? null, expected: m.expected ?? null };
    } else {
      problem.value = { message: m.message, position: null, expected: null };
    }
    ids.value = [];
    rows.clear();
    matching.value = 0;
    byStatus.value = { online: 0, offline: 0 };
    version.value++;
  });

  /** The screen shows rows [from, from + n): fetch the window around it unless it is already held. */
  function show(from: number, n: number): void {
    first = from;
    count = n;
    // Before the first open the window is requested with it (open() uses first/count).
    if (!openRef) return;
    const held = from >= reqOffset && from + n <= reqOffset + reqLimit;
    const nearEdge = (from - reqOffset < MARGIN / 3 && reqOffset > 0) || reqOffset + reqLimit - (from + n) < MARGIN / 3;
    if (held && !nearEdge) return;
    // At most one scroll message per 40 ms (the socket's message budget is 50/s), the latest wins.
    if (scrollTimer) return;
    const wait = Math.max(held ? 40 : 0, lastScroll + 40 - Date.now());
    scrollTimer = setTimeout(() => {
      scrollTimer = null;
      lastScroll = Date.now();
      const w = windowFor();
      if (w.offset === reqOffset && w.limit === reqLimit) return;
      reqOffset = w.offset;
      reqLimit = w.limit;
      send({ type: 'fleet.scroll', view, offset: w.offset, limit: w.limit });
    }, wait);
  }

  /** The row at index `i` of the sorted, filtered list, if this page holds it. */
  function rowAt(i: number): AgentView | undefined {
    const id = ids.value[i - offset.value];
    return id === undefined ? undefined : rows.get(id);
  }

  let debounce: ReturnType<typeof setTimeout> | null = null;
  watch(
    params,
    (p, old) => {
      // The window is opened around the current screen; a shorter list clamps the table's scroll,
      // which reports the new range.
      if (debounce) clearTimeout(debounce);
      const typed = old !== undefined && p.selector !== old.selector;
      debounce = setTimeout(
        () => {
          debounce = null;
          if (socketState.value === 'open') open();
        },
        typed ? 200 : 0,
      );
    },
    { deep: true },
  );
  onReady(() => open());
  onScopeDispose(() => {
    if (debounce) clearTimeout(debounce);
    if (scrollTimer) clearTimeout(scrollTimer);
    send({ type: 'fleet.close', view });
  });

  return { version, ids, offset, total, matching, byStatus, loaded, loading, problem, show, rowAt, rows };
}

/** One selector that means the view's filter: its selector and its status filter together. */
export function effectiveSelector(selector: string, status: 'all' | 'online' | 'offline'): string {
  const s = selector.trim();
  if (status === 'all') return s || 'all';
  const st = `status == "${status}"`;
  return s ? `(${s}) and ${st}` : st;
}
