import type { Knex } from 'knex';
import { convertTables, isMysql } from './util.js';

/** The one character set and collation of every table on MySQL/MariaDB (what utf8mb4() in util.ts gives a new table). */
const CHARSET = 'utf8mb4';
const COLLATION = 'utf8mb4_unicode_ci';
/** Run state columns hold `awaiting_approval` (17 characters). */
const STATE_COLUMNS = [
  ['rollouts', 'state'],
  ['file_distributions', 'state'],
] as const;
const STATE_WIDTH = 32;

/**
 * Repairs MySQL/MariaDB databases that earlier migrations left wrong. From the day the server opened
 * MySQL through its own client class (server/db/db.ts), the migrations' test for MySQL read the
 * configured client, found a class instead of 'mysql2', and quietly did nothing MySQL-specific:
 * - new tables took the database's default character set instead of utf8mb4 (a latin1 database could
 *   not store emoji in names, labels or output, and tables of two collations cannot be joined on
 *   their string columns);
 * - `state` of rollouts and file distributions stayed 16 characters wide, so `awaiting_approval` was
 *   refused ("Data too long") and a run waiting for its approval was stored as still soaking.
 * Each step runs only where the table is not already right, so a database created after the fix
 * is left untouched. Converting a table rewrites it: on a large table this takes a while, once.
 * No-op on SQLite (no fixed widths, text is UTF-8).
 */
export async function up(knex: Knex): Promise<void> {
  if (!isMysql(knex)) return;
  const tables = (await knex('information_schema.tables')
    .select({ name: 'table_name', collation: 'table_collation' })
    .whereRaw('table_schema = database()')
    .andWhere('table_type', 'BASE TABLE')) as { name: string; collation: string | null }[];
  // knex's own bookkeeping tables are in use while this runs, and only ever compared among themselves.
  const wrong = tables.filter((t) => t.collation !== COLLATION && !t.name.startsWith('knex_'));
  await convertTables(
    knex,
    wrong.map((t) => t.name),
    CHARSET,
    COLLATION,
  );
  for (const [table, column] of STATE_COLUMNS) {
    const col = (await knex('information_schema.columns')
      .first({ width: 'character_maximum_length' })
      .whereRaw('table_schema = database()')
      .andWhere({ table_name: table, column_name: column })) as { width: number | string | null } | undefined;
    if (col && Number(col.width) < STATE_WIDTH) await knex.raw(`ALTER TABLE ?? MODIFY ?? VARCHAR(${STATE_WIDTH}) NOT NULL`, [table, column]);
  }
}

/** Nothing to undo: narrowing columns or changing character sets back could cut stored data. */
export async function down(): Promise<void> {}
