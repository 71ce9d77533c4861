import type { AgentRecord } from '../fleet/registry.js';
import { effectiveLabels } from '../fleet/registry.js';
import { SelectorError } from './errors.js';
import { parseSelector, type Node } from './parser.js';

export { SelectorError };

export type AgentPredicate = (a: AgentRecord) => boolean;

/** Translates a glob (`*` any run, `?` one character, `[abc]` a class) into an anchored, case-insensitive RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end > i + 1) {
        const body = glob.slice(i + 1, end).replace(/\\/g, '\\\\');
        re += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
        i = end;
      } else re += '\\[';
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 'is');
}

function compile(n: Node): AgentPredicate {
  switch (n.kind) {
    case 'all':
      return () => true;
    case 'names': {
      const set = new Set(n.names);
      return (a) => set.has(a.id) || set.has(a.name);
    }
    case 'in':
      if (n.set === 'groups') return (a) => a.groups.includes(n.value);
      return (a) => Object.prototype.hasOwnProperty.call(effectiveLabels(a), n.value);
    case 'not': {
      const e = compile(n.expr);
      return (a) => !e(a);
    }
    case 'and': {
      const l = compile(n.left);
      const r = compile(n.right);
      return (a) => l(a) && r(a);
    }
    case 'or': {
      const l = compile(n.left);
      const r = compile(n.right);
      return (a) => l(a) || r(a);
    }
    case 'cmp': {
      const f = n.field;
      const get: (a: AgentRecord) => string | undefined = f.kind === 'label'
        ? (a) => effectiveLabels(a)[f.key]
        : (a) => String(a[f.name]);
      // Hostnames are case-insensitive; everything else compares exactly.
      const ci = f.kind === 'field' && f.name === 'hostname';
      const norm = (s: string) => (ci ? s.toLowerCase() : s);
      if (n.op === '~' || n.op === '!~') {
        const re = globToRegExp(n.value);
        const neg = n.op === '!~';
        return (a) => {
          const v = get(a);
          return v === undefined ? neg : re.test(v) !== neg;
        };
      }
      const want = norm(n.value);
      const neg = n.op === '!=';
      return (a) => {
        const v = get(a);
        return v === undefined ? neg : (norm(v) === want) !== neg;
      };
    }
    default: {
      const never: never = n;
      throw new Error(`unhandled selector node ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Compiles a selector (see DESIGN.md) into a predicate over agents; throws SelectorError with the
 * 0-based position and what was expected there on a syntax error.
 */
export function compileSelector(src: string): AgentPredicate {
  if (src.trim() === '') throw new SelectorError(src.length, 'a selector', 'expected a selector at position 0, found end of input');
  return compile(parseSelector(src));
}
