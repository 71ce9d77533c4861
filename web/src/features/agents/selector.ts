/**
 * Live evaluation of a selector against the server (which owns the selector language): the set of
 * matching agent ids, the match count, and syntax errors with their position. Re-evaluated when
 * the text changes (debounced) and when the fleet's shape changes (agents join, leave, relabel).
 */
import { ref, watch, type Ref } from 'vue';
import type { AgentView } from '../../../../protocol/rest';
import { ApiError, api, type ListResult } from '../../api/client';
import { fleetShapeVersion } from './fleet';

export interface SelectorProblem {
  message: string;
  position: number | null;
  expected: string | null;
}

export function useSelectorMatch(selector: Readonly<Ref<string>>, opts: { ids?: boolean } = {}) {
  const ids = ref<Set<string> | null>(null);
  const total = ref<number | null>(null);
  const problem = ref<SelectorProblem | null>(null);
  const loading = ref(false);
  let seq = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let inFlight = false;
  let again = false;

  async function run(): Promise<void> {
    const s = selector.value.trim();
    const my = ++seq;
    if (!s) {
      ids.value = null;
      total.value = null;
      problem.value = null;
      return;
    }
    loading.value = true;
    inFlight = true;
    try {
      const r = await api.get<ListResult<AgentView>>('/api/agents', { selector: s, limit: opts.ids ? 50_000 : 1 });
      if (my !== seq) return;
      problem.value = null;
      total.value = r.total;
      ids.value = opts.ids ? new Set(r.items.map((a) => a.id)) : null;
    } catch (err) {
      if (my !== seq) return;
      ids.value = null;
      total.value = null;
      if (err instanceof ApiError && err.code === 'selector_syntax') {
        const pos = err.details['position'];
        const exp = err.details['expected'];
        problem.value = { message: err.message, position: typeof pos === 'number' ? pos : null, expected: typeof exp === 'string' ? exp : null };
      } else {
        problem.value = { message: err instanceof Error ? err.message : String(err), position: null, expected: null };
      }
    } finally {
      inFlight = false;
      if (my === seq) loading.value = false;
      if (again) {
        again = false;
        schedule(1000);
      }
    }
  }
  function schedule(ms: number) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      void run();
    }, ms);
  }
  watch(selector, () => schedule(250), { immediate: true });
  // Agents joining, leaving or changing may change the matches. In a big fleet this churns all the
  // time: re-evaluate at most once a second and never with a request already in flight.
  watch(fleetShapeVersion, () => {
    if (!selector.value.trim()) return;
    if (inFlight) again = true;
    else if (!timer) schedule(1000);
  });
  return { ids, total, problem, loading, refresh: run };
}
