/** The signed-in user's choice of agents table columns, kept in localStorage (see columns.ts). */
import { ref, watch, type Ref } from 'vue';
import { useSession } from '../../composables/session';
import { columnsKey, normalizeColumns, parseColumnChoice } from './columns';

function read(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

/** The signed-in user's shown columns (reactive; re-read when the user changes), and setters. */
export function useColumnChoice(all: readonly string[], defaults: readonly string[]): { shown: Ref<string[]>; set(keys: string[]): void; reset(): void } {
  const { user } = useSession();
  const key = () => (user.value ? columnsKey(user.value) : null);
  const load = () => {
    const k = key();
    return parseColumnChoice(k ? read(k) : null, all, defaults);
  };
  const shown = ref<string[]>(load());
  watch(
    () => (user.value ? columnsKey(user.value) : null),
    () => (shown.value = load()),
  );
  function set(keys: string[]): void {
    shown.value = normalizeColumns(keys, all);
    const k = key();
    if (!k) return;
    try {
      localStorage.setItem(k, JSON.stringify(shown.value));
    } catch {
      // storage full or disabled: the choice lasts for this page only
    }
  }
  function reset(): void {
    shown.value = parseColumnChoice(null, all, defaults);
    const k = key();
    if (k)
      try {
        localStorage.removeItem(k);
      } catch {
        // ignore
      }
  }
  return { shown, set, reset };
}
