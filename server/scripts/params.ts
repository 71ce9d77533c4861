import { z } from 'zod';
import { SCRIPT_PARAMS_MAX, ScriptParamDef, ScriptParamValue } from '../../protocol/index.js';
import { ApiError } from '../http/errors.js';

/** A version's parameters (each a protocol ScriptParamDef): at most SCRIPT_PARAMS_MAX, names unique case-insensitively, defaults valid for their type. */
export const ParamDefs = z
  .array(ScriptParamDef)
  .max(SCRIPT_PARAMS_MAX)
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

/** The env name a parameter reaches the script under. */
export const envName = (param: string) => `MUSTER_PARAM_${param.toUpperCase()}`;

/** Coerces a value to the parameter's type; returns the env string or an error message. */
function coerce(p: ScriptParamDef, v: ScriptParamValue): { value: string } | { error: string } {
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

function checkValue(p: ScriptParamDef, v: ScriptParamValue): string | null {
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
  defs: ScriptParamDef[],
  values: Record<string, ScriptParamValue>,
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
