import type { Knex } from 'knex';
import type { Dialect } from '../db/db.js';
import { sqlitePrepared, sqliteValue } from '../db/prepared.js';
import { COLS, type ExecPatch } from './columns.js';

/** Rows per multi-row UPDATE on MySQL (a CASE list is scanned per row: not thousands). */
export const UPDATE_ROWS = 200;

/** The patchable fields with their columns, in a fixed order (bit i of a group's mask is FIELDS[i]). */
const FIELDS = Object.entries(COLS) as ReadonlyArray<[keyof ExecPatch, string]>;

/**
 * The fields a patch writes, as a bit mask over FIELDS (an undefined value writes nothing, as
 * knex's update() omits it). A number, so grouping 10,000 patches builds no key strings and no
 * row objects (it cost as much CPU as SQLite's own updates: issue 17).
 */
function fieldMask(p: ExecPatch): number {
  let mask = 0;
  for (let i = 0; i < FIELDS.length; i++) if (p[FIELDS[i]![0]] !== undefined) mask |= 1 << i;
  return mask;
}

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
export async function updateExecutionRows(
  trx: Knex.Transaction,
  dialect: Dialect,
  updates: ReadonlyMap<string, ExecPatch>,
  fenceNode?: string,
): Promise<number> {
  const q = dialect === 'mysql' ? (c: string) => `\`${c}\`` : (c: string) => `"${c}"`;
  // Cluster fence: rows of tasks another node has taken over are left alone.
  const fence =
    fenceNode === undefined
      ? ''
      : ` AND EXISTS (SELECT 1 FROM ${q('tasks')} WHERE ${q('tasks')}.${q('id')} = ${q('executions')}.${q('task_id')} AND (${q('tasks')}.${q('owner_node')} = ? OR ${q('tasks')}.${q('owner_node')} IS NULL))`;
  const fenceArgs = fenceNode === undefined ? [] : [fenceNode];
  const groups = new Map<number, { fields: Array<[keyof ExecPatch, string]>; rows: Array<[string, ExecPatch]> }>();
  for (const [id, p] of updates) {
    const mask = fieldMask(p);
    if (mask === 0) continue;
    let g = groups.get(mask);
    if (!g) groups.set(mask, (g = { fields: FIELDS.filter((_, i) => mask & (1 << i)), rows: [] }));
    g.rows.push([id, p]);
  }
  let statements = 0;
  const prepared = await sqlitePrepared(trx);
  if (prepared) {
    for (const { fields, rows } of groups.values()) {
      // Column names come from the fixed map in repo.ts (COLS), never from input.
      const stmt = prepared(`UPDATE "executions" SET ${fields.map(([, c]) => `"${c}" = ?`).join(', ')} WHERE "id" = ?${fence}`);
      const params = new Array<unknown>(fields.length + 1 + fenceArgs.length);
      for (const [id, p] of rows) {
        for (let i = 0; i < fields.length; i++) params[i] = sqliteValue(p[fields[i]![0]]);
        params[fields.length] = id;
        for (let i = 0; i < fenceArgs.length; i++) params[fields.length + 1 + i] = fenceArgs[i];
        stmt.run(...params);
      }
      statements++;
    }
    return statements;
  }
  for (const { fields, rows } of groups.values()) {
    for (let i = 0; i < rows.length; i += UPDATE_ROWS) {
      const chunk = rows.slice(i, i + UPDATE_ROWS);
      const sets: string[] = [];
      const bindings: unknown[] = [];
      for (const [k, c] of fields) {
        const first = chunk[0]![1][k];
        if (chunk.every(([, p]) => p[k] === first)) {
          sets.push(`${q(c)} = ?`);
          bindings.push(first);
          continue;
        }
        sets.push(`${q(c)} = CASE ${q('id')}${' WHEN ? THEN ?'.repeat(chunk.length)} END`);
        for (const [id, p] of chunk) bindings.push(id, p[k]);
      }
      for (const [id] of chunk) bindings.push(id);
      bindings.push(...fenceArgs);
      const sql = `UPDATE ${q('executions')} SET ${sets.join(', ')} WHERE ${q('id')} IN (${new Array<string>(chunk.length).fill('?').join(',')})${fence}`;
      await trx.raw(sql, bindings as Knex.RawBinding[]);
      statements++;
    }
  }
  return statements;
}
