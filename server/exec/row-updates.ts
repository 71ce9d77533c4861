import type { Knex } from 'knex';
import type { Dialect } from '../db/db.js';
import { patchToRow, type ExecPatch } from './repository.js';

/** Rows per UPDATE statement (SQLite binds at most 32,766 values; a CASE list is scanned per row). */
export const UPDATE_ROWS = 200;

/**
 * Stores queued row updates of executions in a few multi-row statements instead of one per row.
 *
 * Patches are grouped by the set of columns they write; each group is written `UPDATE_ROWS` rows
 * at a time: a column with the same value in every row of the chunk is set directly, the others
 * through `CASE id WHEN … THEN … END`. A 10,000-host task's results (each with its own start and
 * end time) then cost about 50 statements per flush, not 10,000: on MariaDB each statement is a
 * round trip, on SQLite a statement compiled and prepared by knex.
 *
 * Returns the number of statements issued.
 */
export async function updateExecutionRows(trx: Knex.Transaction, dialect: Dialect, updates: ReadonlyMap<string, ExecPatch>): Promise<number> {
  const q = dialect === 'mysql' ? (c: string) => `\`${c}\`` : (c: string) => `"${c}"`;
  const groups = new Map<string, { cols: string[]; rows: Array<[string, Record<string, unknown>]> }>();
  for (const [id, p] of updates) {
    const row = patchToRow(p);
    // An undefined value writes nothing (as knex's update() omits it).
    const cols = Object.keys(row).filter((c) => row[c] !== undefined).sort();
    if (cols.length === 0) continue;
    const key = cols.join(',');
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { cols, rows: [] }));
    g.rows.push([id, row]);
  }
  let statements = 0;
  for (const { cols, rows } of groups.values()) {
    for (let i = 0; i < rows.length; i += UPDATE_ROWS) {
      const chunk = rows.slice(i, i + UPDATE_ROWS);
      const sets: string[] = [];
      const bindings: unknown[] = [];
      for (const c of cols) {
        const first = chunk[0]![1][c];
        if (chunk.every(([, r]) => r[c] === first)) {
          sets.push(`${q(c)} = ?`);
          bindings.push(first);
          continue;
        }
        // Column names come from the fixed map in repository.ts (COLS), never from input.
        sets.push(`${q(c)} = CASE ${q('id')}${' WHEN ? THEN ?'.repeat(chunk.length)} END`);
        for (const [id, r] of chunk) bindings.push(id, r[c]);
      }
      for (const [id] of chunk) bindings.push(id);
      const sql = `UPDATE ${q('executions')} SET ${sets.join(', ')} WHERE ${q('id')} IN (${new Array<string>(chunk.length).fill('?').join(',')})`;
      await trx.raw(sql, bindings as Knex.RawBinding[]);
      statements++;
    }
  }
  return statements;
}
