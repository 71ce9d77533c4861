import type { Knex } from 'knex';
import type { Dialect } from '../db/db.js';
import { sqlitePrepared, sqliteValue } from '../db/prepared.js';
import { patchToRow, type ExecPatch } from './repo.js';

/** Rows per multi-row UPDATE on MySQL (a CASE list is scanned per row: not thousands). */
export const UPDATE_ROWS = 200;

/**
 * Stores queued row updates of executions without a statement compiled per row. Patches are
 * grouped by the set of columns they write (every result of a 10,000-host task carries its own
 * start and end time, so rows rarely share values).
 *
 * - MySQL/MariaDB: each statement is a round trip, so a group is written `UPDATE_ROWS` rows at a
 *   time: a column with the same value in every row of the chunk is set directly, the others
 *   through `CASE id WHEN … THEN … END` (10,000 results: 50 statements, not 10,000).
 * - SQLite (in-process, no round trip): one statement per group, prepared once on the connection
 *   and run per row, about ten times cheaper than knex compiling and preparing each statement.
 *
 * Returns the number of statements compiled (knex queries on MySQL, prepared statements used on SQLite).
 */
export async function updateExecutionRows(trx: Knex.Transaction, dialect: Dialect, updates: ReadonlyMap<string, ExecPatch>): Promise<number> {
  const q = dialect === 'mysql' ? (c: string) => `\`${c}\`` : (c: string) => `"${c}"`;
  const groups = new Map<string, { cols: string[]; rows: Array<[string, Record<string, unknown>]> }>();
  for (const [id, p] of updates) {
    const row = patchToRow(p);
    // An undefined value writes nothing (as knex's update() omits it).
    const cols = Object.keys(row)
      .filter((c) => row[c] !== undefined)
      .sort();
    if (cols.length === 0) continue;
    const key = cols.join(',');
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { cols, rows: [] }));
    g.rows.push([id, row]);
  }
  let statements = 0;
  const prepared = await sqlitePrepared(trx);
  if (prepared) {
    for (const { cols, rows } of groups.values()) {
      // Column names come from the fixed map in repo.ts (COLS), never from input.
      const stmt = prepared(`UPDATE "executions" SET ${cols.map((c) => `"${c}" = ?`).join(', ')} WHERE "id" = ?`);
      for (const [id, r] of rows) stmt.run(...cols.map((c) => sqliteValue(r[c])), id);
      statements++;
    }
    return statements;
  }
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
        // Column names come from the fixed map in repo.ts (COLS), never from input.
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
