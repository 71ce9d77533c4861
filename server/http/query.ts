import type { Request } from 'express';
import { z } from 'zod';
import { ApiError } from './errors.js';

/**
 * One query parameter, given once. Express parses `?a=1&a=2` into an array and `?a[b]=1` into an
 * object; both are a 400 here instead of reaching code that expects a string.
 */
export const one = () => z.string({ error: 'must be given once, as a plain value' });

/** One of `values`, given once. */
export const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { error: `must be one of ${values.join(', ')} (given once)` });

/** A whole number in a query string. */
export const int = () =>
  one()
    .regex(/^-?\d{1,15}$/, 'must be a whole number')
    .transform(Number);

/**
 * `limit` and `offset` with a route's default and maximum. Out-of-range values are clamped (as
 * they always were); values that are not numbers, or repeated, are a 400.
 */
export function pageShape(def = 50, max = 1000) {
  return {
    limit: int()
      .optional()
      .transform((v) => Math.min(max, Math.max(1, v ?? def))),
    offset: int()
      .optional()
      .transform((v) => Math.max(0, v ?? 0)),
  };
}

/**
 * Parses a request's query string with `shape` (unknown parameters are ignored; an empty value is
 * the same as an absent one). Every router reads its query through this: a bad one is a 400 that
 * names the parameter, never a 500.
 */
export function parseQuery<S extends z.ZodRawShape>(req: Request, shape: S): z.output<z.ZodObject<S>> {
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(req.query as Record<string, unknown>)) if (v !== '') raw[k] = v;
  const r = z.object(shape).safeParse(raw);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `query parameter ${i.path.map(String).join('.') || '?'}: ${i.message}`).join('; ');
    throw new ApiError('bad_request', msg);
  }
  return r.data;
}
