import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/**
 * Schedules of library scripts, and one row per fire. A fire is claimed by a conditional update of
 * `next_fire_at` plus the insert of its (schedule_id, due_at) row, so each due time fires at most
 * once however many server processes share the database.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('schedules', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('name', 128).notNullable().unique();
    t.string('script_id', 36).notNullable().references('id').inTable('scripts');
    t.integer('script_version').nullable(); // null: the latest version at fire time
    t.text('params').notNullable();
    t.text('secret_params').nullable(); // write-only values of secret parameters
    t.text('selector').notNullable();
    t.integer('timeout_sec').notNullable();
    t.string('concurrency', 16).nullable();
    t.string('max_failures', 16).nullable();
    t.string('offline', 8).notNullable();
    t.integer('queue_ttl_sec').notNullable();
    t.string('cron', 255).nullable();
    t.string('time_zone', 64).notNullable();
    t.integer('interval_sec').nullable();
    t.bigInteger('anchor_at').notNullable();
    t.boolean('enabled').notNullable();
    t.string('overlap', 8).notNullable();
    t.string('missed', 8).notNullable();
    t.bigInteger('next_fire_at').nullable();
    t.bigInteger('last_due_at').nullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.index(['enabled', 'next_fire_at']);
    t.index(['script_id']);
  });
  await knex.schema.createTable('schedule_fires', (t) => {
    utf8mb4(knex, t);
    t.string('schedule_id', 36).notNullable().references('id').inTable('schedules').onDelete('CASCADE');
    t.bigInteger('due_at').notNullable();
    t.bigInteger('fired_at').notNullable();
    t.string('node_id', 64).notNullable();
    // claimed → started (a task exists) | skipped | missed | failed
    t.string('status', 16).notNullable();
    t.string('task_id', 36).nullable();
    t.integer('script_version').nullable();
    t.string('reason', 1024).nullable();
    t.primary(['schedule_id', 'due_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['schedule_fires', 'schedules']) await knex.schema.dropTableIfExists(t);
}
