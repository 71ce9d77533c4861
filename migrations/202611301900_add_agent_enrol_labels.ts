import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/**
 * The labels an agent's enrollment token applied, kept apart from the operator's overrides so they
 * merge over the labels the agent keeps reporting (a snapshot in label_overrides froze them).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.text('enrol_labels').nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await dropColumns(knex, 'agents', ['enrol_labels']);
}
