import type { Knex } from 'knex';

/** On MySQL/MariaDB every table is utf8mb4 (emoji in hostnames, labels and output). No-op on SQLite. */
export function utf8mb4(knex: Knex, t: Knex.CreateTableBuilder): void {
  const client = String((knex.client as { config?: { client?: unknown } }).config?.client ?? '');
  if (client.startsWith('mysql')) {
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
  const client = String((knex.client as { config?: { client?: unknown } }).config?.client ?? '');
  if (client.includes('sqlite')) {
    for (const c of columns) await knex.raw('ALTER TABLE ?? DROP COLUMN ??', [table, c]);
  } else {
    await knex.schema.alterTable(table, (t) => {
      for (const c of columns) t.dropColumn(c);
    });
  }
}
