import type { ScriptParamDef } from '../../../../protocol/rest';

/** Script library shapes (GET /api/scripts and /api/scripts/:id) are protocol/rest.ts's ScriptSummary and ScriptView. */
export type { ScriptParamDef, ScriptParamType, ScriptSummary, ScriptView } from '../../../../protocol/rest';

/** Every field any parameter type has, optional, with its type(s). */
type AnyParamField<T> = { [K in T extends unknown ? keyof T : never]?: T extends unknown ? (K extends keyof T ? T[K] : never) : never };

/**
 * A parameter as the editor changes it: its type can change in place, so the fields of every type
 * are optional here; the server checks the result against ScriptParamDef on save.
 */
export type ParamDraft = Pick<ScriptParamDef, 'name' | 'type' | 'required'> & AnyParamField<ScriptParamDef>;
