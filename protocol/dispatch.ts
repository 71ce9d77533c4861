/**
 * The one routine every JSON control channel uses on receipt (server ← agent, server ← console,
 * agent ← server): parse, validate with the channel's schema, classify what is refused, find the
 * handler in an explicit table, run it. Each link keeps only what is its own (state before hello,
 * rate limits, what to do when a peer keeps sending garbage).
 */
import type { ErrorCode } from './errors.js';

/** Longest `ref` carried back in an `error` (every channel's schema accepts at least this). */
export const REF_MAX = 64;

/** Why an inbound control message was refused, ready to be sent back as an `error`. */
export interface Refusal {
  code: Extract<ErrorCode, 'invalid_message' | 'unknown_type'>;
  message: string;
  ref?: string;
}

export type Decoded<M> = { ok: true; msg: M } | { ok: false; refusal: Refusal };

/**
 * The `ref` of an `error` names the message it answers: the message's own `ref` when it carried
 * one (the sender's correlation id, e.g. a console's `term.open`), otherwise its `type`. Never
 * anything the sender did not write; at most REF_MAX characters.
 */
export function refOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const { ref, type } = raw as { ref?: unknown; type?: unknown };
  if (typeof ref === 'string' && ref !== '') return ref.slice(0, REF_MAX);
  if (typeof type === 'string' && type !== '') return type.slice(0, REF_MAX);
  return undefined;
}

/** What a dispatcher needs of a zod discriminated union on `type` (structural, so any zod build fits). */
export interface MessageSchema<M> {
  safeParse(raw: unknown): { success: true; data: M } | { success: false; error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> } };
  options: ReadonlyArray<{ shape: { type: { value: string } } }>;
}

type AnyHandler<C> = (ctx: C, msg: never) => unknown;

/**
 * Decoding and dispatch for one channel direction. Built once per handlers object and shared by
 * every socket of that channel (20,000 agents do not carry 20,000 tables).
 *
 * The table is a `Map` built from the handlers object's own keys, never a lookup on an object, so
 * a `type` such as `__proto__`, `constructor` or `toString` finds nothing: the schema refuses it
 * as an unknown type before the table is consulted, and the table could not find it either.
 */
export class MessageDispatcher<M extends { type: string }, C> {
  /** Every type the schema knows (a known type that fails validation is invalid, not unknown). */
  readonly types: ReadonlySet<string>;
  private readonly table: ReadonlyMap<string, AnyHandler<C>>;
  private readonly fast: ReadonlyMap<string, (raw: unknown) => boolean>;

  /**
   * `fast`: per type, a hand-written check that accepts only messages the schema would accept and
   * return unchanged (see fast-paths.ts); a message it passes skips the schema. Anything it does
   * not pass is validated by the schema as usual.
   */
  constructor(
    private readonly schema: MessageSchema<M>,
    handlers: object,
    fast: Readonly<Record<string, (raw: unknown) => boolean>> = {},
  ) {
    this.types = new Set(schema.options.map((o) => o.shape.type.value));
    this.table = new Map(Object.entries(handlers) as Array<[string, AnyHandler<C>]>);
    this.fast = new Map(Object.entries(fast));
  }

  /** Parses and validates one text frame. */
  decode(text: string): Decoded<M> {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return { ok: false, refusal: { code: 'invalid_message', message: 'message is not valid JSON' } };
    }
    const type0 = (raw as { type?: unknown } | null)?.type;
    if (typeof type0 === 'string' && this.fast.get(type0)?.(raw) === true) return { ok: true, msg: raw as M };
    const parsed = this.schema.safeParse(raw);
    if (parsed.success) return { ok: true, msg: parsed.data };
    const ref = refOf(raw);
    const type = (raw as { type?: unknown } | null)?.type;
    if (typeof type !== 'string' || !this.types.has(type)) {
      const named = typeof type === 'string' ? type.slice(0, REF_MAX) : null;
      return { ok: false, refusal: { code: 'unknown_type', message: `unknown message type ${JSON.stringify(named)}`, ...(ref ? { ref } : {}) } };
    }
    const why = parsed.error.issues.map((i) => `${i.path.map(String).join('.')}: ${i.message}`).join('; ');
    return { ok: false, refusal: { code: 'invalid_message', message: `invalid ${type}: ${why}`.slice(0, 1000), ...(ref ? { ref } : {}) } };
  }

  /** Whether a handler exists for this type. */
  has(type: string): boolean {
    return this.table.has(type);
  }

  /**
   * Runs the message's handler. A handler that throws or whose promise rejects is reported to
   * `onError` (the socket stays up). False when the table has no handler for the type.
   */
  dispatch(ctx: C, msg: M, onError: (err: unknown, type: string) => void): boolean {
    const h = this.table.get(msg.type);
    if (!h) return false;
    try {
      const r = h(ctx, msg as never);
      if (r instanceof Promise) r.catch((err: unknown) => onError(err, msg.type));
    } catch (err) {
      onError(err, msg.type);
    }
    return true;
  }
}

/** Refused messages of one socket: once more than `max` were counted, the peer is to be cut off. */
export class InvalidCounter {
  private n = 0;
  constructor(private readonly max: number) {}
  /** Counts one refused message; true when that one went over the limit. */
  count(): boolean {
    return ++this.n > this.max;
  }
}
