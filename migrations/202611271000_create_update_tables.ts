import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/** Agent packages (artifacts), rollouts and their per-agent targets. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('artifacts', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('version', 64).notNullable();
    t.string('filename', 255).notNullable();
    t.string('arch', 32).nullable();
    t.bigInteger('size').notNullable();
    t.string('sha256', 64).notNullable();
    t.string('signature', 512).notNullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.index(['version']);
    t.index(['created_at']);
  });
  await knex.schema.createTable('rollouts', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('artifact_id', 36).nullable();
    t.string('version', 64).notNullable();
    t.text('url').nullable();
    t.bigInteger('size').notNullable();
    t.string('sha256', 64).notNullable();
    t.string('signature', 512).notNullable();
    t.text('selector').notNullable();
    t.text('waves').notNullable();
    t.integer('max_failures').notNullable().defaultTo(0);
    t.boolean('allow_downgrade').notNullable().defaultTo(false);
    t.string('state', 16).notNullable();
    t.string('reason', 512).nullable();
    t.integer('current_wave').notNullable().defaultTo(0);
    t.integer('failure_base').notNullable().defaultTo(0);
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.bigInteger('finished_at').nullable();
    t.index(['state']);
    t.index(['created_at']);
  });
  await knex.schema.createTable('rollout_targets', (t) => {
    utf8mb4(knex, t);
    t.string('rollout_id', 36).notNullable();
    t.string('agent_id', 128).notNullable();
    t.string('agent_name', 255).notNullable();
    t.integer('wave').notNullable();
    t.string('state', 16).notNullable();
    t.text('reason').nullable();
    t.string('from_version', 64).nullable();
    t.bigInteger('started_at').nullable();
    t.bigInteger('updated_at').notNullable();
    t.primary(['rollout_id', 'agent_id']);
    t.index(['agent_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['rollout_targets', 'rollouts', 'artifacts']) await knex.schema.dropTableIfExists(t);
}
