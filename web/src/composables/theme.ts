/** Light/dark theme, following the system until the user picks one (kept in localStorage). */
import { computed, ref, watch } from 'vue';
import { darkTheme, type GlobalTheme } from 'naive-ui';

const KEY = 'muster.theme';
const media = typeof matchMedia === 'function' ? matchMedia('(prefers-color-scheme: dark)') : null;
const stored = localStorage.getItem(KEY);
const dark = ref<boolean>(stored ? stored === 'dark' : Boolean(media?.matches));
watch(
  dark,
  (d) => {
    localStorage.setItem(KEY, d ? 'dark' : 'light');
    document.documentElement.dataset['theme'] = d ? 'dark' : 'light';
  },
  { immediate: true },
);

export function useTheme() {
  const theme = computed<GlobalTheme | null>(() => (dark.value ? darkTheme : null));
  return { dark, theme, toggle: () => (dark.value = !dark.value) };
}
