import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/** Terminal sessions: who opened which shell on which agent, when it ended and why, bytes and recording. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('terminal_sessions', (t) => {
    utf8mb4(knex, t);
    t.string('id', 64).primary();
    t.string('agent_id', 128).notNullable();
    t.integer('user_id').notNullable();
    t.string('username', 64).notNullable();
    t.string('ip', 64).nullable();
    t.string('node', 64).nullable();
    t.integer('cols').notNullable();
    t.integer('rows').notNullable();
    t.integer('pid').nullable();
    t.bigInteger('opened_at').notNullable();
    t.bigInteger('closed_at').nullable();
    t.string('close_reason', 255).nullable();
    t.integer('exit_code').nullable();
    t.bigInteger('bytes_in').notNullable().defaultTo(0);
    t.bigInteger('bytes_out').notNullable().defaultTo(0);
    /** Path of the asciicast file relative to the data dir; null when recording was off. */
    t.string('recording', 255).nullable();
    t.bigInteger('recording_bytes').notNullable().defaultTo(0);
    t.boolean('recording_truncated').notNullable().defaultTo(false);
    t.index(['agent_id', 'opened_at']);
    t.index(['opened_at']);
    t.index(['closed_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('terminal_sessions');
}
