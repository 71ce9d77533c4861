import type { Knex } from 'knex';
import { dropColumns, isMysql } from './util.js';

const RUNS = ['rollouts', 'file_distributions'] as const;

/**
 * Runs in waves (rollouts, file distributions) can wait between waves: `soak_seconds` after a wave
 * ends (counted from `wave_done_at`, which survives a restart), and `approval` (the run waits in
 * state awaiting_approval). That state name is longer than the 16 characters `state` had, so on
 * MySQL/MariaDB the column widens to 32 (SQLite does not enforce varchar lengths).
 * Artifacts get the admin's `stable` mark: `latest` is the newest stable package.
 */
export async function up(knex: Knex): Promise<void> {
  for (const table of RUNS) {
    await knex.schema.alterTable(table, (t) => {
      t.integer('soak_seconds').notNullable().defaultTo(0);
      t.boolean('approval').notNullable().defaultTo(false);
      t.bigInteger('wave_done_at').nullable();
    });
    if (isMysql(knex)) await knex.raw('ALTER TABLE ?? MODIFY ?? VARCHAR(32) NOT NULL', [table, 'state']);
  }
  await knex.schema.alterTable('artifacts', (t) => {
    t.boolean('stable').notNullable().defaultTo(false);
    t.string('stable_by', 128).nullable();
    t.bigInteger('stable_at').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  // The state columns stay 32 wide on MySQL/MariaDB: narrowing could cut stored states.
  for (const table of RUNS) await dropColumns(knex, table, ['soak_seconds', 'approval', 'wave_done_at']);
  await dropColumns(knex, 'artifacts', ['stable', 'stable_by', 'stable_at']);
}
