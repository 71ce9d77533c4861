import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/**
 * Enrollment tokens as resources (like Teleport's join tokens): created by admins with a TTL, a
 * maximum number of uses and labels for the agents that enroll with them; stored as a sha256 hash.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('enrollment_tokens', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('name', 128).notNullable();
    t.string('token_hash', 64).notNullable().unique();
    t.string('prefix', 16).notNullable();
    t.text('labels').notNullable();
    t.integer('max_uses').nullable(); // null: any number of uses until it expires
    t.integer('uses').notNullable().defaultTo(0);
    t.bigInteger('expires_at').notNullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('revoked_at').nullable();
    t.bigInteger('last_used_at').nullable();
    // Minted by the server for its own local agent (single use, short TTL).
    t.boolean('internal').notNullable().defaultTo(false);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('enrollment_tokens');
}
