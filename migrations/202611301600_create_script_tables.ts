import type { Knex } from 'knex';
import { dropColumns, utf8mb4 } from './util.js';

/**
 * Script library: saved scripts and their immutable versions; tasks remember the script version
 * (and schedule) they ran and which of their environment names are write-only (secret parameters).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('scripts', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('name', 128).notNullable().unique();
    t.string('owner', 128).notNullable();
    t.integer('latest_version').notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });
  await knex.schema.createTable('script_versions', (t) => {
    utf8mb4(knex, t);
    t.string('script_id', 36).notNullable().references('id').inTable('scripts').onDelete('CASCADE');
    t.integer('version').notNullable();
    t.string('name', 128).notNullable();
    t.text('description').notNullable();
    t.string('interpreter', 32).notNullable();
    t.text('body', 'mediumtext').notNullable();
    t.string('body_sha256', 64).notNullable();
    t.text('tags').notNullable();
    t.text('params').notNullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.primary(['script_id', 'version']);
  });
  await knex.schema.alterTable('tasks', (t) => {
    t.string('script_id', 36).nullable();
    t.integer('script_version').nullable();
    t.string('schedule_id', 36).nullable();
    // JSON array of env names whose values are write-only (never returned by the API).
    t.text('secret_env').nullable();
    t.index(['script_id', 'created_at'], 'tasks_script_id_created_at_index');
    t.index(['schedule_id', 'created_at'], 'tasks_schedule_id_created_at_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tasks', (t) => {
    t.dropIndex(['script_id', 'created_at'], 'tasks_script_id_created_at_index');
    t.dropIndex(['schedule_id', 'created_at'], 'tasks_schedule_id_created_at_index');
  });
  await dropColumns(knex, 'tasks', ['script_id', 'script_version', 'schedule_id', 'secret_env']);
  for (const t of ['script_versions', 'scripts']) await knex.schema.dropTableIfExists(t);
}
