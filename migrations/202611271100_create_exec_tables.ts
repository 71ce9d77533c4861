import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/** Remote execution: tasks, one execution per target agent, and the executions' output chunks (bytes). */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tasks', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.text('script', 'mediumtext').notNullable();
    t.string('script_sha256', 64).notNullable();
    t.string('interpreter', 255).notNullable();
    t.text('args').notNullable();
    t.text('env').notNullable();
    t.string('cwd', 4096).nullable();
    t.integer('timeout_sec').notNullable();
    t.text('targets').notNullable();
    t.string('concurrency', 16).nullable();
    t.string('max_failures', 16).nullable();
    t.string('offline', 8).notNullable().defaultTo('skip');
    t.integer('queue_ttl_sec').nullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.string('status', 16).notNullable();
    t.integer('total').notNullable().defaultTo(0);
    t.bigInteger('finished_at').nullable();
    t.bigInteger('cancelled_at').nullable();
    t.string('cancelled_by', 128).nullable();
    t.string('rerun_of', 36).nullable();
    t.index(['created_at']);
    t.index(['status', 'created_at']);
    t.index(['created_by', 'created_at']);
  });
  await knex.schema.createTable('executions', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('task_id', 36).notNullable().references('id').inTable('tasks').onDelete('CASCADE');
    t.string('agent_id', 128).notNullable();
    t.string('agent_name', 255).notNullable();
    t.string('status', 16).notNullable();
    t.string('reason', 1024).nullable();
    t.integer('exit_code').nullable();
    t.string('signal', 32).nullable();
    t.bigInteger('queued_until').nullable();
    t.bigInteger('dispatched_at').nullable();
    t.bigInteger('started_at').nullable();
    t.bigInteger('finished_at').nullable();
    t.bigInteger('output_bytes').notNullable().defaultTo(0);
    t.integer('next_seq').notNullable().defaultTo(0);
    t.boolean('truncated').notNullable().defaultTo(false);
    t.string('containment', 255).nullable();
    t.index(['task_id', 'status']);
    t.index(['agent_id', 'status']);
    t.index(['status']);
  });
  await knex.schema.createTable('execution_output', (t) => {
    utf8mb4(knex, t);
    t.bigIncrements('id').primary();
    t.string('execution_id', 36).notNullable().references('id').inTable('executions').onDelete('CASCADE');
    t.integer('seq').notNullable();
    // A chunk larger than one BLOB (64 KiB on MySQL) is stored as several parts of one seq.
    t.integer('part').notNullable().defaultTo(0);
    t.tinyint('stream').notNullable(); // 1 stdout, 2 stderr
    t.binary('data').notNullable();
    t.unique(['execution_id', 'seq', 'part']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['execution_output', 'executions', 'tasks']) await knex.schema.dropTableIfExists(t);
}
