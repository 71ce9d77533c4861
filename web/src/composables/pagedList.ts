/**
 * The console's list views as one composable: load a page of `ListResult` from the API, page through
 * it, keep the error to show (with a retry), reload from page 1 when a filter changes (at once for a
 * picked value, after FILTER_DEBOUNCE_MS for typed text), and never let a slow earlier answer
 * overwrite a newer one. `loaded` tells "still loading" (a skeleton) from "empty" (an empty state).
 */
import { computed, ref, shallowRef, watch, type Ref, type ShallowRef, type WatchSource } from 'vue';
import { api, errorText, type ListResult } from '../api/client';
import { onReady } from './socket';

/** How long typing in a filter box waits for a pause before the list reloads. */
export const FILTER_DEBOUNCE_MS = 300;

type QueryValue = string | number | boolean | undefined;

export interface PagedListOptions<T, Q extends Record<string, QueryValue>> {
  /** The list's endpoint. */
  url: string;
  /** Rows per page (the request's `limit`). */
  pageSize: number;
  /** The filters as query parameters (undefined ones are left out); read on every load. */
  query?: () => Q;
  /** Sources that reload from page 1 at once (selects, date ranges). */
  picked?: WatchSource[];
  /** Sources that reload from page 1 once typing pauses (text boxes). */
  typed?: WatchSource[];
  /** Called with the filters before each load (e.g. to keep them in the address). */
  onQuery?: (q: Q) => void;
  /** Called with each answer (for fields a list endpoint adds beside items and total). */
  onResult?: (r: ListResult<T>) => void;
  /** Load when the console socket is ready (default), or only when `load` is called. */
  auto?: boolean;
}

export interface PagedList<T> {
  items: ShallowRef<T[]>;
  total: Ref<number>;
  /** 1-based page number; setting it loads that page. */
  page: Ref<number>;
  pageSize: number;
  /** A request is in flight. */
  loading: Ref<boolean>;
  /** The first request answered (with rows or an error): until then a skeleton, not an empty state. */
  loaded: Ref<boolean>;
  /** The last request's error message ('' when it succeeded). */
  error: Ref<string>;
  /** Loads the current page again (also the retry of an error). */
  load: () => Promise<void>;
  /** Naive UI's data table pagination for this list. */
  pagination: Readonly<Ref<{ page: number; pageSize: number; itemCount: number; onChange: (p: number) => void }>>;
}

export function usePagedList<T, Q extends Record<string, QueryValue> = Record<string, QueryValue>>(opts: PagedListOptions<T, Q>): PagedList<T> {
  const items = shallowRef<T[]>([]);
  const total = ref(0);
  const page = ref(1);
  const loading = ref(false);
  const loaded = ref(false);
  const error = ref('');
  let seq = 0;

  async function load(): Promise<void> {
    const mine = ++seq;
    const q = opts.query?.() ?? ({} as Q);
    opts.onQuery?.(q);
    loading.value = true;
    try {
      const r = await api.get<ListResult<T>>(opts.url, { ...q, limit: opts.pageSize, offset: (page.value - 1) * opts.pageSize });
      if (mine !== seq) return;
      items.value = r.items;
      total.value = r.total;
      error.value = '';
      opts.onResult?.(r);
    } catch (err) {
      if (mine !== seq) return;
      error.value = errorText(err);
    } finally {
      if (mine === seq) {
        loading.value = false;
        loaded.value = true;
      }
    }
  }
  /** Back to page 1 and load (a page change triggers the load itself). */
  function restart() {
    if (page.value === 1) void load();
    else page.value = 1;
  }

  watch(page, () => void load());
  if (opts.picked?.length) watch(opts.picked, restart);
  if (opts.typed?.length) {
    let timer: ReturnType<typeof setTimeout> | null = null;
    watch(opts.typed, () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        restart();
      }, FILTER_DEBOUNCE_MS);
    });
  }
  if (opts.auto !== false) onReady(() => void load());

  const pagination = computed(() => ({
    page: page.value,
    pageSize: opts.pageSize,
    itemCount: total.value,
    onChange: (p: number) => (page.value = p),
  }));
  return { items, total, page, pageSize: opts.pageSize, loading, loaded, error, load, pagination };
}
