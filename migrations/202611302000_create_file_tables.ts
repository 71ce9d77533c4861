import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/**
 * File distribution (issue 13): managed files, their revisions (content on disk under
 * dataDir/files), distributions of a revision in waves with one row per target host, and the
 * per-host state the agents report (the revision they hold, drift).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('managed_files', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.text('path').notNullable();
    // sha256 of the path while the file is managed (null once deleted): one managed file per path.
    // A hash because a 4 KiB utf8mb4 path is longer than MySQL's longest index key.
    t.string('path_key', 64).nullable().unique();
    t.string('owner_user', 64).nullable();
    t.string('owner_group', 64).nullable();
    t.integer('mode').notNullable();
    t.text('post_command').nullable();
    t.integer('latest_revision').notNullable().defaultTo(0);
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.bigInteger('deleted_at').nullable();
  });
  await knex.schema.createTable('file_revisions', (t) => {
    utf8mb4(knex, t);
    t.string('file_id', 36).notNullable().references('id').inTable('managed_files').onDelete('CASCADE');
    t.integer('revision').notNullable();
    t.string('sha256', 64).notNullable();
    t.bigInteger('size').notNullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.primary(['file_id', 'revision']);
  });
  await knex.schema.createTable('file_distributions', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('file_id', 36).notNullable().references('id').inTable('managed_files').onDelete('CASCADE');
    t.integer('revision').notNullable();
    t.string('kind', 8).notNullable(); // apply | remove
    t.text('selector').notNullable();
    t.text('waves').notNullable();
    t.integer('max_failures').notNullable();
    t.string('state', 16).notNullable();
    t.string('reason', 1024).nullable();
    t.integer('current_wave').notNullable();
    t.integer('failure_base').notNullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.bigInteger('finished_at').nullable();
    t.index(['file_id', 'created_at']);
    t.index(['state']);
  });
  await knex.schema.createTable('file_distribution_targets', (t) => {
    utf8mb4(knex, t);
    t.string('distribution_id', 36).notNullable().references('id').inTable('file_distributions').onDelete('CASCADE');
    t.string('agent_id', 128).notNullable();
    t.string('agent_name', 255).notNullable();
    t.integer('wave').notNullable();
    t.string('state', 16).notNullable();
    t.string('reason', 2048).nullable();
    t.string('post_task_id', 36).nullable();
    t.bigInteger('started_at').nullable();
    t.bigInteger('updated_at').notNullable();
    t.primary(['distribution_id', 'agent_id']);
  });
  await knex.schema.createTable('file_hosts', (t) => {
    utf8mb4(knex, t);
    t.string('file_id', 36).notNullable().references('id').inTable('managed_files').onDelete('CASCADE');
    t.string('agent_id', 128).notNullable();
    t.integer('revision').notNullable();
    t.string('sha256', 64).nullable();
    t.string('state', 16).notNullable(); // ok | drifted | missing
    t.string('reason', 1024).nullable();
    t.bigInteger('updated_at').notNullable();
    t.primary(['file_id', 'agent_id']);
    t.index(['agent_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['file_hosts', 'file_distribution_targets', 'file_distributions', 'file_revisions', 'managed_files']) await knex.schema.dropTableIfExists(t);
}
