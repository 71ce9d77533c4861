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
