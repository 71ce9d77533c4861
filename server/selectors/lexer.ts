import { SelectorError } from './errors.js';

/** One token of the selector language; `pos` is its 0-based offset in the source. */
export type Token =
  | { kind: 'word'; value: string; pos: number }
  | { kind: 'string'; value: string; pos: number; /** Whether the source used escapes (then value offsets differ from source offsets). */ escaped: boolean }
  | { kind: 'op'; value: '==' | '!=' | '~' | '!~'; pos: number }
  | { kind: 'punct'; value: '(' | ')' | '[' | ']' | ','; pos: number }
  | { kind: 'eof'; value: ''; pos: number };

/** Characters of a bare word: agent ids, names and hostnames, field names, `labels.key`. */
const WORD = /[A-Za-z0-9_.:@*?\-/]/;

/** Splits a selector into tokens. Pure; throws SelectorError on a character that starts no token. */
export function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    if (c === '(' || c === ')' || c === '[' || c === ']' || c === ',') {
      out.push({ kind: 'punct', value: c, pos: i });
      i++;
      continue;
    }
    if (c === '=') {
      if (src[i + 1] !== '=') throw new SelectorError(i, '`==`', `expected \`==\` at position ${i}`);
      out.push({ kind: 'op', value: '==', pos: i });
      i += 2;
      continue;
    }
    if (c === '!') {
      const n = src[i + 1];
      if (n === '=') out.push({ kind: 'op', value: '!=', pos: i });
      else if (n === '~') out.push({ kind: 'op', value: '!~', pos: i });
      else throw new SelectorError(i, '`!=` or `!~`', `expected \`!=\` or \`!~\` at position ${i}`);
      i += 2;
      continue;
    }
    if (c === '~') {
      out.push({ kind: 'op', value: '~', pos: i });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      const start = i;
      let value = '';
      let escaped = false;
      i++;
      for (;;) {
        if (i >= src.length)
          throw new SelectorError(
            src.length,
            `closing ${c}`,
            `unterminated string starting at position ${start}: expected closing ${c} at position ${src.length}`,
          );
        const ch = src[i]!;
        if (ch === c) {
          i++;
          break;
        }
        if (ch === '\\') {
          const e = src[i + 1];
          if (e === undefined) throw new SelectorError(i + 1, 'an escaped character', `expected an escaped character at position ${i + 1}`);
          value += e === 'n' ? '\n' : e === 't' ? '\t' : e;
          escaped = true;
          i += 2;
          continue;
        }
        value += ch;
        i++;
      }
      out.push({ kind: 'string', value, pos: start, escaped });
      continue;
    }
    if (WORD.test(c)) {
      const start = i;
      while (i < src.length && WORD.test(src[i]!)) i++;
      out.push({ kind: 'word', value: src.slice(start, i), pos: start });
      continue;
    }
    throw new SelectorError(i, 'a name, string, operator or parenthesis', `unexpected character ${JSON.stringify(c)} at position ${i}`);
  }
  out.push({ kind: 'eof', value: '', pos: src.length });
  return out;
}
