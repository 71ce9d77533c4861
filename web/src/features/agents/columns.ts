/**
 * Which columns of the agents table are shown, chosen by each user and kept in this browser's
 * localStorage under a key naming the signed-in user (two users of one browser keep their own).
 * What is stored is the list of shown column keys; unknown keys are dropped, the name column is
 * always shown, and a missing or unreadable entry means the defaults.
 * The logic is here (unit-tested); the reactive choice is in columnChoice.ts.
 */

/** localStorage key prefix; the user's id and name follow. */
export const COLUMNS_KEY_PREFIX = 'muster.agents.columns';
/** Columns that cannot be hidden (the row's link). */
export const REQUIRED_COLUMNS: readonly string[] = ['name'];

export function columnsKey(user: { id: number; username: string }): string {
  return `${COLUMNS_KEY_PREFIX}.${user.id}.${user.username}`;
}

/** The shown keys, in the table's order, from a stored value (null/garbage: the defaults). */
export function parseColumnChoice(raw: string | null, all: readonly string[], defaults: readonly string[]): string[] {
  let wanted: unknown = null;
  try {
    wanted = raw === null ? null : JSON.parse(raw);
  } catch {
    wanted = null;
  }
  const list = Array.isArray(wanted) ? wanted.filter((k): k is string => typeof k === 'string') : null;
  return normalizeColumns(list && list.some((k) => all.includes(k)) ? list : defaults, all);
}

/** `keys` plus the required columns, in the table's order, unknown keys dropped. */
export function normalizeColumns(keys: readonly string[], all: readonly string[]): string[] {
  const keep = new Set([...keys, ...REQUIRED_COLUMNS]);
  return all.filter((k) => keep.has(k));
}
