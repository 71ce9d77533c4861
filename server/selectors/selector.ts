import type { AgentRecord } from '../fleet/repo.js';
import { effectiveLabels } from '../fleet/repo.js';
import { SelectorError } from './errors.js';
import { compileGlob } from './glob.js';
import { DEFAULT_SELECTOR_LIMITS, parseSelector, type Node, type SelectorLimits } from './parser.js';

export { DEFAULT_SELECTOR_LIMITS, SelectorError, type SelectorLimits };

export type AgentPredicate = (a: AgentRecord) => boolean;

/** The value of label `key`, own properties only: `labels.__proto__` or `labels.constructor` find nothing. */
function labelOf(a: AgentRecord, key: string): string | undefined {
  const labels = effectiveLabels(a);
  if (!Object.prototype.hasOwnProperty.call(labels, key)) return undefined;
  const v: unknown = labels[key];
  return typeof v === 'string' ? v : undefined;
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
      const get: (a: AgentRecord) => string | undefined = f.kind === 'label' ? (a) => labelOf(a, f.key) : (a) => String(a[f.name]);
      // Hostnames are case-insensitive; everything else compares exactly.
      const ci = f.kind === 'field' && f.name === 'hostname';
      const norm = (s: string) => (ci ? s.toLowerCase() : s);
      if (n.op === '~' || n.op === '!~') {
        const re = compileGlob(n.value, n.valuePos);
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
export function compileSelector(src: string, limits: SelectorLimits = DEFAULT_SELECTOR_LIMITS): AgentPredicate {
  if (src.trim() === '') throw new SelectorError(src.length, 'a selector', 'expected a selector at position 0, found end of input');
  return compile(parseSelector(src, limits));
}
