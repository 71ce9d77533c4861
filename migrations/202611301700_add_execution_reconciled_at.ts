import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/** executions.reconciled_at: when a `lost` execution took the real result its agent reported late. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('executions', (t) => {
    t.bigInteger('reconciled_at').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await dropColumns(knex, 'executions', ['reconciled_at']);
}
