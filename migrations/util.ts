import type { Knex } from 'knex';

/**
 * Whether the database is MySQL/MariaDB. Asks knex's dialect, not the configured client: the server
 * opens MySQL through its own subclass of knex's mysql2 client (server/db/db.ts), so the configured
 * client is a class, not the string 'mysql2', and a test of that string silently said "not MySQL".
 */
export function isMysql(knex: Knex): boolean {
  return (knex.client as { dialect?: string }).dialect === 'mysql';
}

/** Whether the database is SQLite (better-sqlite3 reports knex's sqlite3 dialect). */
export function isSqlite(knex: Knex): boolean {
  return (knex.client as { dialect?: string }).dialect === 'sqlite3';
}

/** On MySQL/MariaDB every table is utf8mb4 (emoji in hostnames, labels and output). No-op on SQLite. */
export function utf8mb4(knex: Knex, t: Knex.CreateTableBuilder): void {
  if (isMysql(knex)) {
    t.charset('utf8mb4');
    t.collate('utf8mb4_unicode_ci');
    t.engine('InnoDB');
  }
}

/**
 * Drops columns without touching the table's rows or the rows that reference it. On SQLite knex
 * drops a column by rebuilding the table, and inside a migration's transaction foreign keys stay on,
 * so dropping the old table would cascade-delete every child row (all executions of `tasks`, all
 * output of `executions`). SQLite's own ALTER TABLE … DROP COLUMN (3.35+) changes it in place.
 */
export async function dropColumns(knex: Knex, table: string, columns: readonly string[]): Promise<void> {
  if (isSqlite(knex)) {
    for (const c of columns) await knex.raw('ALTER TABLE ?? DROP COLUMN ??', [table, c]);
  } else {
    await knex.schema.alterTable(table, (t) => {
      for (const c of columns) t.dropColumn(c);
    });
  }
}

const FK_RULES = new Set(['CASCADE', 'SET NULL', 'RESTRICT', 'NO ACTION', 'SET DEFAULT']);

/**
 * MySQL/MariaDB: converts tables to a character set and collation. MariaDB refuses to change a
 * column that a foreign key ties to another table (even with foreign_key_checks off), so the keys
 * that touch these tables are dropped first and created again, identical, once every table is
 * converted (both sides of each key then match again).
 */
export async function convertTables(knex: Knex, tables: readonly string[], charset: string, collation: string): Promise<void> {
  if (tables.length === 0) return;
  if (!/^\w+$/.test(charset) || !/^\w+$/.test(collation)) throw new Error(`bad character set ${charset} ${collation}`);
  const touched = new Set(tables);
  const [rows] = (await knex.raw(
    `SELECT k.table_name AS t, k.constraint_name AS n, k.column_name AS c, k.referenced_table_name AS rt,
            k.referenced_column_name AS rc, r.delete_rule AS d, r.update_rule AS u
       FROM information_schema.key_column_usage k
       JOIN information_schema.referential_constraints r
         ON r.constraint_schema = k.constraint_schema AND r.constraint_name = k.constraint_name AND r.table_name = k.table_name
      WHERE k.table_schema = database() AND k.referenced_table_name IS NOT NULL
      ORDER BY k.table_name, k.constraint_name, k.ordinal_position`,
  )) as [{ t: string; n: string; c: string; rt: string; rc: string; d: string; u: string }[]];
  const keys = new Map<string, { table: string; name: string; cols: string[]; ref: string; refCols: string[]; onDelete: string; onUpdate: string }>();
  for (const r of rows) {
    if (!touched.has(r.t) && !touched.has(r.rt)) continue;
    const id = `${r.t}\0${r.n}`;
    const k = keys.get(id) ?? { table: r.t, name: r.n, cols: [], ref: r.rt, refCols: [], onDelete: r.d, onUpdate: r.u };
    k.cols.push(r.c);
    k.refCols.push(r.rc);
    keys.set(id, k);
  }
  for (const k of keys.values())
    if (!FK_RULES.has(k.onDelete) || !FK_RULES.has(k.onUpdate)) throw new Error(`unexpected foreign key rule on ${k.table}.${k.name}`);
  for (const k of keys.values()) await knex.raw('ALTER TABLE ?? DROP FOREIGN KEY ??', [k.table, k.name]);
  for (const t of tables) await knex.raw(`ALTER TABLE ?? CONVERT TO CHARACTER SET ${charset} COLLATE ${collation}`, [t]);
  for (const k of keys.values()) {
    const cols = k.cols.map(() => '??').join(', ');
    await knex.raw(`ALTER TABLE ?? ADD CONSTRAINT ?? FOREIGN KEY (${cols}) REFERENCES ?? (${cols}) ON DELETE ${k.onDelete} ON UPDATE ${k.onUpdate}`, [
      k.table,
      k.name,
      ...k.cols,
      k.ref,
      ...k.refCols,
    ]);
  }
}
