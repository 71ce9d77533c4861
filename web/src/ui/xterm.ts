/** Creates xterm.js terminals with the addons the console uses and a theme matching light/dark. */
import { Terminal, type ITerminalInitOnlyOptions, type ITerminalOptions, type ITheme } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { SearchAddon } from '@xterm/addon-search';
import { Unicode11Addon } from '@xterm/addon-unicode11';
import { WebLinksAddon } from '@xterm/addon-web-links';
import '@xterm/xterm/css/xterm.css';

const DARK: ITheme = { background: '#18181c', foreground: '#e6e6e6', cursor: '#e6e6e6', selectionBackground: '#3a5a80' };
const LIGHT: ITheme = {
  background: '#fbfbfb',
  foreground: '#202020',
  cursor: '#202020',
  selectionBackground: '#b4d0f0',
  black: '#202020',
  white: '#9a9a9a',
  brightWhite: '#6a6a6a',
  yellow: '#a07800',
  brightYellow: '#8a6a00',
};

export interface Xterm {
  term: Terminal;
  fit: FitAddon;
  search: SearchAddon;
  dispose(): void;
}

/** A terminal with fit, search, web-links and Unicode 11 widths (emoji, CJK) loaded. */
export function createXterm(opts: ITerminalOptions & ITerminalInitOnlyOptions & { dark: boolean }): Xterm {
  const { dark, ...rest } = opts;
  const term = new Terminal({
    // Latin monospace first, then CJK-capable fonts per platform (Linux Noto/Source Han, macOS,
    // Windows) so Chinese/Japanese/Korean output does not fall into a proportional font or boxes.
    fontFamily:
      'ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", "Noto Sans Mono CJK JP", "Source Han Mono", ' +
      '"Sarasa Mono SC", "PingFang SC", "Hiragino Sans", "Microsoft YaHei", "Malgun Gothic", monospace',
    fontSize: 13,
    scrollback: 10_000,
    allowProposedApi: true,
    theme: dark ? DARK : LIGHT,
    ...rest,
  });
  const fit = new FitAddon();
  const search = new SearchAddon();
  term.loadAddon(fit);
  term.loadAddon(search);
  term.loadAddon(new WebLinksAddon());
  term.loadAddon(new Unicode11Addon());
  term.unicode.activeVersion = '11';
  return { term, fit, search, dispose: () => term.dispose() };
}

export function xtermTheme(dark: boolean): ITheme {
  return dark ? DARK : LIGHT;
}

/** Ctrl+Shift+C copies the selection; Ctrl+Shift+V pastes (plain Ctrl+C stays an interrupt). */
export function clipboardKeys(term: Terminal): void {
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
    if (e.code === 'KeyC') {
      const sel = term.getSelection();
      if (sel) void navigator.clipboard?.writeText(sel).catch(() => {});
      return false;
    }
    if (e.code === 'KeyV') {
      // Browsers also treat Ctrl+Shift+V as "paste as plain text": that native paste event reaches
      // xterm's textarea on top of ours, and the text arrived twice. With the Clipboard API we
      // paste ourselves and cancel the native one; without it, the native paste is the only one.
      if (navigator.clipboard?.readText) {
        e.preventDefault();
        void navigator.clipboard
          .readText()
          .then((t) => term.paste(t))
          .catch(() => {});
      }
      return false;
    }
    return true;
  });
}
