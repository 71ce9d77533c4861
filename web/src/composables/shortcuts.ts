/**
 * Keyboard shortcuts of the console: `g` then a letter goes to a page, `/` focuses the page's filter,
 * `n` starts the page's "new" action (an element marked data-shortcut="new"), `?` shows the list. Keys typed into a field (or a terminal) are never taken.
 */
import { onBeforeUnmount, onMounted, ref } from 'vue';
import type { Router } from 'vue-router';
import type { Role } from '../../../protocol/console-messages';

export interface Shortcut {
  keys: string;
  what: string;
  to?: string;
  role?: Role;
}

/** Every shortcut, in the order the help lists them. */
export const SHORTCUTS: readonly Shortcut[] = [
  { keys: 'g d', what: 'Dashboard', to: '/' },
  { keys: 'g a', what: 'Agents', to: '/agents' },
  { keys: 'g r', what: 'Run a script', to: '/run', role: 'operator' },
  { keys: 'g h', what: 'History (tasks)', to: '/tasks' },
  { keys: 'g l', what: 'Script library', to: '/library' },
  { keys: 'g s', what: 'Schedules', to: '/schedules' },
  { keys: 'g f', what: 'Files (managed files)', to: '/files' },
  { keys: 'g t', what: 'Terminals', to: '/terminals' },
  { keys: 'g b', what: 'Broadcast terminals', to: '/terminals/broadcast' },
  { keys: 'g p', what: 'Recordings (playback)', to: '/recordings' },
  { keys: 'g u', what: 'Updates', to: '/updates' },
  { keys: 'g k', what: 'API tokens (keys)', to: '/tokens' },
  { keys: 'g x', what: 'Admin', to: '/admin', role: 'admin' },
  { keys: '/', what: 'Focus the filter or search box of the page' },
  { keys: 'n', what: 'New item on the page (script, managed file, schedule)' },
  { keys: '?', what: 'Show this list' },
  { keys: 'Esc', what: 'Close this list; leave a field' },
];

/** How long after `g` the second key may come. */
const CHORD_MS = 1500;

/** Whether a key event was typed into something that takes text (a field, an editor, a terminal). */
function typing(e: KeyboardEvent): boolean {
  const t = e.target as HTMLElement | null;
  if (!t || !(t instanceof HTMLElement)) return false;
  if (t.isContentEditable) return true;
  if (t.closest('.xterm, .cm-editor')) return true;
  const tag = t.tagName;
  return tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT';
}

/** The filter of the current page: an element marked data-shortcut="filter", else the page's first text field. */
function pageFilter(): HTMLElement | null {
  const marked = document.querySelector<HTMLElement>('[data-shortcut=filter]');
  const el = marked
    ? marked.matches('input, textarea')
      ? marked
      : marked.querySelector<HTMLElement>('input, textarea')
    : document.querySelector<HTMLElement>('.page input[type=text]:not([disabled]), .page input:not([type]):not([disabled])');
  return el && el.offsetParent !== null ? el : null;
}

/** Installs the shortcuts for the component's lifetime; `help` is true while the list is shown. */
export function useShortcuts(router: Router, can: (r: Role) => boolean) {
  const help = ref(false);
  let chordAt = 0;
  const onKey = (e: KeyboardEvent) => {
    if (e.key === 'Escape') {
      if (help.value) help.value = false;
      else if (typing(e) && !(e.target as HTMLElement).closest('.xterm, .cm-editor')) (e.target as HTMLElement).blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e) || e.defaultPrevented) return;
    if (e.key === '?') {
      e.preventDefault();
      help.value = !help.value;
      return;
    }
    if (e.key === '/') {
      const f = pageFilter();
      if (f) {
        e.preventDefault();
        f.focus();
      }
      return;
    }
    if (e.key === 'n' && !e.shiftKey && !(chordAt && Date.now() - chordAt < CHORD_MS)) {
      const el = document.querySelector<HTMLElement>('[data-shortcut=new]');
      if (el && el.offsetParent !== null && !el.hasAttribute('disabled')) {
        e.preventDefault();
        el.click();
      }
      return;
    }
    if (e.key === 'g' && !e.shiftKey) {
      chordAt = Date.now();
      return;
    }
    if (chordAt && Date.now() - chordAt < CHORD_MS) {
      chordAt = 0;
      const s = SHORTCUTS.find((x) => x.keys === `g ${e.key}`);
      if (s?.to && (!s.role || can(s.role))) {
        e.preventDefault();
        help.value = false;
        void router.push(s.to);
      }
      return;
    }
    chordAt = 0;
  };
  onMounted(() => window.addEventListener('keydown', onKey));
  onBeforeUnmount(() => window.removeEventListener('keydown', onKey));
  return { help };
}
