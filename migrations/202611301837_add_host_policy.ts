import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/**
 * Host-side policy: the policy each agent reports (JSON, shown on the agent page and used to refuse
 * early), and the signature a task was submitted with (sent with every dispatch, reruns included).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.text('policy').nullable();
  });
  await knex.schema.alterTable('tasks', (t) => {
    t.string('signature', 512).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await dropColumns(knex, 'tasks', ['signature']);
  await dropColumns(knex, 'agents', ['policy']);
}
