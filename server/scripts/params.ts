import { z } from 'zod';
import { ApiError } from '../http/errors.js';

/** Parameter names become env names (MUSTER_PARAM_<NAME>), so they are env-safe and unique case-insensitively. */
const PARAM_NAME = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, 'parameter names are [A-Za-z_][A-Za-z0-9_]*, at most 64 characters');
const VALUE_MAX = 65_536;

const Base = {
  name: PARAM_NAME,
  label: z.string().max(128).optional(),
  help: z.string().max(1024).optional(),
  required: z.boolean().default(false),
};

/** One typed parameter of a library script (stored in each version). */
export const ParamDef = z.discriminatedUnion('type', [
  z
    .object({ ...Base, type: z.literal('string'), default: z.string().max(VALUE_MAX).optional(), maxLength: z.number().int().min(1).max(VALUE_MAX).optional() })
    .strict(),
  z
    .object({
      ...Base,
      type: z.literal('number'),
      default: z.number().finite().optional(),
      min: z.number().finite().optional(),
      max: z.number().finite().optional(),
      integer: z.boolean().optional(),
    })
    .strict(),
  z.object({ ...Base, type: z.literal('boolean'), default: z.boolean().optional() }).strict(),
  z
    .object({ ...Base, type: z.literal('choice'), choices: z.array(z.string().min(1).max(256)).min(1).max(100), default: z.string().max(256).optional() })
    .strict(),
  // Write-only: no default (a stored default would be a secret at rest that every run reveals to the script's editors).
  z.object({ ...Base, type: z.literal('secret') }).strict(),
]);
export type ParamDef = z.infer<typeof ParamDef>;

export const ParamDefs = z
  .array(ParamDef)
  .max(64)
  .superRefine((defs, ctx) => {
    const seen = new Set<string>();
    defs.forEach((p, i) => {
      const key = p.name.toUpperCase();
      if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate parameter ${p.name} (names are case-insensitive)` });
      seen.add(key);
      if (p.type !== 'secret' && p.default !== undefined) {
        const err = checkValue(p, p.default);
        if (err) ctx.addIssue({ code: 'custom', path: [i, 'default'], message: err });
      }
      if (p.type === 'number' && p.min !== undefined && p.max !== undefined && p.min > p.max) {
        ctx.addIssue({ code: 'custom', path: [i, 'max'], message: 'max is below min' });
      }
    });
  });

/** What a caller may pass for one parameter. */
export const ParamValue = z.union([z.string().max(VALUE_MAX), z.number().finite(), z.boolean()]);
export type ParamValue = z.infer<typeof ParamValue>;

/** The env name a parameter reaches the script under. */
export const envName = (param: string) => `MUSTER_PARAM_${param.toUpperCase()}`;

/** Coerces a value to the parameter's type; returns the env string or an error message. */
function coerce(p: ParamDef, v: ParamValue): { value: string } | { error: string } {
  switch (p.type) {
    case 'string':
    case 'secret': {
      if (typeof v !== 'string') return { error: 'must be a string' };
      if (p.type === 'string' && p.maxLength !== undefined && v.length > p.maxLength) return { error: `longer than ${p.maxLength} characters` };
      return { value: v };
    }
    case 'number': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
      if (!Number.isFinite(n)) return { error: 'must be a number' };
      if (p.integer && !Number.isInteger(n)) return { error: 'must be an integer' };
      if (p.min !== undefined && n < p.min) return { error: `must be at least ${p.min}` };
      if (p.max !== undefined && n > p.max) return { error: `must be at most ${p.max}` };
      return { value: String(n) };
    }
    case 'boolean': {
      if (typeof v === 'boolean') return { value: String(v) };
      if (v === 'true' || v === 'false') return { value: v };
      return { error: 'must be true or false' };
    }
    case 'choice': {
      const s = String(v);
      if (!p.choices.includes(s)) return { error: `must be one of ${p.choices.join(', ')}` };
      return { value: s };
    }
  }
}

function checkValue(p: ParamDef, v: ParamValue): string | null {
  const r = coerce(p, v);
  return 'error' in r ? r.error : null;
}

/**
 * Validates run-time values against a version's parameters and builds the environment the script
 * gets (values are never spliced into the script text). Secret values are named in `secretEnv`.
 * `forceSecret` names values that were given as secrets (a schedule's stored secrets): they stay
 * secret even when this version declares the parameter as another type, so retyping a parameter
 * never turns a stored secret into plain text in the task or the audit.
 */
export function paramEnv(
  defs: ParamDef[],
  values: Record<string, ParamValue>,
  forceSecret: ReadonlySet<string> = new Set(),
): { env: Record<string, string>; secretEnv: string[]; shown: Record<string, string> } {
  const byName = new Map(defs.map((p) => [p.name, p]));
  const unknown = Object.keys(values).filter((k) => !byName.has(k));
  if (unknown.length) throw new ApiError('bad_request', `unknown parameter(s): ${unknown.slice(0, 10).join(', ')}`, 400, { unknown });
  const env: Record<string, string> = {};
  const secretEnv: string[] = [];
  const shown: Record<string, string> = {};
  const problems: string[] = [];
  for (const p of defs) {
    const given = values[p.name];
    const v = given ?? (p.type !== 'secret' ? p.default : undefined);
    if (v === undefined) {
      if (p.required) problems.push(`${p.name}: required`);
      continue;
    }
    const r = coerce(p, v);
    if ('error' in r) {
      problems.push(`${p.name}: ${r.error}`);
      continue;
    }
    env[envName(p.name)] = r.value;
    if (p.type === 'secret' || (given !== undefined && forceSecret.has(p.name))) secretEnv.push(envName(p.name));
    else shown[p.name] = r.value;
  }
  if (problems.length) throw new ApiError('bad_request', `invalid parameters: ${problems.join('; ')}`, 400, { params: problems });
  return { env, secretEnv, shown };
}
