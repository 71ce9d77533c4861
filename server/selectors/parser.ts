import { SelectorError } from './errors.js';
import { tokenize, type Token } from './lexer.js';

/** Fields a comparison can name (besides `labels.key` / `labels["key"]`). */
export const FIELDS = ['id', 'name', 'hostname', 'version', 'platform', 'arch', 'os', 'status'] as const;
export type Field = (typeof FIELDS)[number];

/** The selector syntax tree. */
export type Node =
  | { kind: 'all' }
  | { kind: 'names'; names: string[] }
  | {
      kind: 'cmp';
      field: { kind: 'field'; name: Field } | { kind: 'label'; key: string };
      op: '==' | '!=' | '~' | '!~';
      value: string;
      /** Source position of the value's first character (of its opening quote when it has escapes). */
      valuePos: number;
    }
  | { kind: 'in'; value: string; set: 'groups' | 'labels' }
  | { kind: 'not'; expr: Node }
  | { kind: 'and' | 'or'; left: Node; right: Node };

const KEYWORDS = new Set(['and', 'or', 'not', 'in', 'all']);

/**
 * Bounds on one selector, so that no selector costs more than a known amount to parse and to
 * evaluate against every agent (config: MUSTER_SELECTOR_MAX_LENGTH, _MAX_DEPTH, _MAX_TERMS).
 */
export interface SelectorLimits {
  /** Characters in the selector. */
  maxLength: number;
  /** Nesting of parentheses and `not`: the parser recurses once per level. */
  maxDepth: number;
  /** Comparisons, name lists, `in` tests and `all`s. */
  maxTerms: number;
}
export const DEFAULT_SELECTOR_LIMITS: Readonly<SelectorLimits> = Object.freeze({ maxLength: 16_384, maxDepth: 32, maxTerms: 256 });

const describe = (t: Token): string => (t.kind === 'eof' ? 'end of input' : t.kind === 'string' ? `string ${JSON.stringify(t.value)}` : `\`${t.value}\``);

/**
 * Recursive-descent parser for the selector language (DESIGN.md):
 *
 *   expr    := and ('or' and)*
 *   and     := unary ('and' unary)*
 *   unary   := 'not' unary | primary
 *   primary := '(' expr ')' | 'all' | field op STRING | value 'in' ('groups'|'labels') | value (',' value)*
 *   field   := FIELD | 'labels.' KEY | 'labels' '[' STRING ']'
 *   op      := '==' | '!=' | '~' (glob) | '!~'
 */
export function parseSelector(src: string, limits: SelectorLimits = DEFAULT_SELECTOR_LIMITS): Node {
  if (src.length > limits.maxLength) {
    throw new SelectorError(
      limits.maxLength,
      `at most ${limits.maxLength} characters`,
      `selector too long: at most ${limits.maxLength} characters (position ${limits.maxLength})`,
    );
  }
  const p = new Parser(tokenize(src), limits);
  const node = p.expr();
  p.expectEof();
  return node;
}

class Parser {
  private i = 0;
  private depth = 0;
  private terms = 0;
  constructor(
    private readonly toks: Token[],
    private readonly limits: SelectorLimits,
  ) {}

  /** Entering a nesting level (`(` or `not`) at `t`: refuse past maxDepth instead of recursing on. */
  private enter(t: Token): void {
    if (++this.depth > this.limits.maxDepth) {
      throw new SelectorError(
        t.pos,
        `at most ${this.limits.maxDepth} levels of nesting`,
        `selector nested too deeply at position ${t.pos}: at most ${this.limits.maxDepth} levels of parentheses and \`not\``,
      );
    }
  }
  private term(t: Token): void {
    if (++this.terms > this.limits.maxTerms) {
      throw new SelectorError(
        t.pos,
        `at most ${this.limits.maxTerms} terms`,
        `selector has too many terms at position ${t.pos}: at most ${this.limits.maxTerms} comparisons`,
      );
    }
  }

  private peek(k = 0): Token {
    return this.toks[Math.min(this.i + k, this.toks.length - 1)]!;
  }
  private next(): Token {
    const t = this.peek();
    if (this.i < this.toks.length - 1) this.i++;
    return t;
  }
  private fail(expected: string, t = this.peek()): never {
    throw new SelectorError(t.pos, expected, `expected ${expected} at position ${t.pos}, found ${describe(t)}`);
  }
  private isWord(v: string, t = this.peek()): boolean {
    return t.kind === 'word' && t.value.toLowerCase() === v;
  }

  expectEof(): void {
    if (this.peek().kind !== 'eof') this.fail('`and`, `or` or end of input');
  }

  expr(): Node {
    let left = this.and();
    while (this.isWord('or')) {
      this.next();
      left = { kind: 'or', left, right: this.and() };
    }
    return left;
  }

  private and(): Node {
    let left = this.unary();
    while (this.isWord('and')) {
      this.next();
      left = { kind: 'and', left, right: this.unary() };
    }
    return left;
  }

  private unary(): Node {
    if (this.isWord('not')) {
      this.enter(this.next());
      const expr = this.unary();
      this.depth--;
      return { kind: 'not', expr };
    }
    return this.primary();
  }

  private primary(): Node {
    const t = this.peek();
    if (t.kind === 'punct' && t.value === '(') {
      this.enter(this.next());
      const e = this.expr();
      const close = this.peek();
      if (!(close.kind === 'punct' && close.value === ')')) this.fail('`)`');
      this.next();
      this.depth--;
      return e;
    }
    this.term(t);
    if (this.isWord('all')) {
      this.next();
      return { kind: 'all' };
    }
    if (t.kind === 'word' && t.value.toLowerCase() === 'labels' && this.peek(1).kind === 'punct' && this.peek(1).value === '[') {
      this.next();
      this.next();
      const key = this.peek();
      if (key.kind !== 'string') this.fail('a quoted label key');
      this.next();
      const close = this.peek();
      if (!(close.kind === 'punct' && close.value === ']')) this.fail('`]`');
      this.next();
      return this.comparison({ kind: 'label', key: key.value });
    }
    if (t.kind === 'word' && /^labels\./i.test(t.value)) {
      const key = t.value.slice('labels.'.length);
      if (!key) this.fail('a label key after `labels.`', { ...t, pos: t.pos + 'labels.'.length });
      this.next();
      return this.comparison({ kind: 'label', key });
    }
    if (t.kind === 'word' && (FIELDS as readonly string[]).includes(t.value.toLowerCase()) && this.peek(1).kind === 'op') {
      this.next();
      return this.comparison({ kind: 'field', name: t.value.toLowerCase() as Field });
    }
    if (t.kind === 'word' || t.kind === 'string') {
      if (t.kind === 'word' && KEYWORDS.has(t.value.toLowerCase())) this.fail('an agent id, name, field or `(`');
      if (this.isWord('in', this.peek(1))) {
        this.next();
        this.next();
        const set = this.peek();
        if (this.isWord('groups', set) || this.isWord('labels', set)) {
          this.next();
          return { kind: 'in', value: t.value, set: set.value.toLowerCase() as 'groups' | 'labels' };
        }
        this.fail('`groups` or `labels`');
      }
      if (this.peek(1).kind === 'op') this.fail(`a field (${FIELDS.join(', ')}, labels.KEY)`, t);
      return this.names();
    }
    this.fail('an agent id, name, field, `all`, `not` or `(`');
  }

  private comparison(field: Extract<Node, { kind: 'cmp' }>['field']): Node {
    const op = this.peek();
    if (op.kind !== 'op') this.fail('`==`, `!=`, `~` or `!~`');
    this.next();
    const v = this.peek();
    if (v.kind !== 'string') this.fail('a quoted string');
    this.next();
    return { kind: 'cmp', field, op: op.value, value: v.value, valuePos: v.escaped ? v.pos : v.pos + 1 };
  }

  private names(): Node {
    const names: string[] = [];
    for (;;) {
      const t = this.peek();
      if (t.kind !== 'word' && t.kind !== 'string') this.fail('an agent id or name');
      if (t.kind === 'word' && KEYWORDS.has(t.value.toLowerCase())) this.fail('an agent id or name');
      names.push(t.value);
      this.next();
      const c = this.peek();
      if (!(c.kind === 'punct' && c.value === ',')) break;
      this.next();
    }
    return { kind: 'names', names };
  }
}
