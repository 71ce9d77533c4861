import type { ParamDraft } from './types';

export type FormValues = Record<string, string | number | boolean | null>;

/** Initial form values: each parameter's default, else empty. */
export function initialValues(params: ParamDraft[]): FormValues {
  const v: FormValues = {};
  for (const p of params) v[p.name] = p.default ?? (p.type === 'boolean' ? false : p.type === 'number' ? null : '');
  return v;
}

/** The values to send: empty optional fields are left out so the server's default (or nothing) applies. */
export function paramsToSend(params: ParamDraft[], values: FormValues): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const p of params) {
    const v = values[p.name];
    if (v === null || v === undefined) continue;
    if (v === '' && (p.type !== 'string' || (!p.required && p.default === undefined))) continue;
    out[p.name] = v;
  }
  return out;
}
