import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/**
 * tasks.name: what the console and the history show and search. Given when the task is created,
 * else the script's first meaningful line (a library run: the script's name); older rows have none
 * and read as that default.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tasks', (t) => {
    t.string('name', 255).nullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await dropColumns(knex, 'tasks', ['name']);
}
