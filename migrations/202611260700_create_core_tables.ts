import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/** Core tables: agents and their connection history, users, sessions, API tokens, audit, settings. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('settings', (t) => {
    utf8mb4(knex, t);
    t.string('key', 64).primary();
    t.text('value').notNullable();
  });
  await knex.schema.createTable('agents', (t) => {
    utf8mb4(knex, t);
    t.string('id', 128).primary();
    t.string('name', 255).notNullable();
    t.string('hostname', 255).notNullable();
    t.text('ips').notNullable();
    t.string('external_ip', 64).nullable();
    t.string('platform', 32).notNullable();
    t.string('arch', 32).notNullable();
    t.string('os', 255).notNullable();
    t.string('version', 64).notNullable();
    t.integer('cpus').notNullable().defaultTo(0);
    t.bigInteger('memory_bytes').notNullable().defaultTo(0);
    t.text('labels').notNullable();
    t.text('label_overrides').nullable();
    t.text('groups').notNullable();
    t.string('secret_hash', 64).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('connected_at').nullable();
    t.bigInteger('last_seen_at').nullable();
    t.bigInteger('revoked_at').nullable();
    t.index(['hostname']);
  });
  await knex.schema.createTable('agent_connections', (t) => {
    utf8mb4(knex, t);
    t.bigIncrements('id').primary();
    t.string('agent_id', 128).notNullable();
    t.bigInteger('connected_at').notNullable();
    t.bigInteger('disconnected_at').nullable();
    t.bigInteger('duration_ms').nullable();
    t.string('reason', 64).nullable();
    t.string('remote_address', 64).nullable();
    t.string('node', 64).nullable();
    t.index(['agent_id', 'connected_at']);
    t.index(['disconnected_at']);
  });
  await knex.schema.createTable('users', (t) => {
    utf8mb4(knex, t);
    t.increments('id').primary();
    t.string('username', 64).notNullable().unique();
    t.string('password_hash', 255).notNullable();
    t.string('role', 16).notNullable();
    t.bigInteger('created_at').notNullable();
    t.boolean('disabled').notNullable().defaultTo(false);
  });
  await knex.schema.createTable('sessions', (t) => {
    utf8mb4(knex, t);
    t.string('id', 64).primary(); // sha256 of the cookie value
    t.integer('user_id').unsigned().notNullable().references('id').inTable('users').onDelete('CASCADE');
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.string('ip', 64).nullable();
    t.string('user_agent', 255).nullable();
    t.index(['user_id']);
  });
  await knex.schema.createTable('api_tokens', (t) => {
    utf8mb4(knex, t);
    t.increments('id').primary();
    t.integer('user_id').unsigned().notNullable().references('id').inTable('users').onDelete('CASCADE');
    t.string('name', 128).notNullable();
    t.string('token_hash', 64).notNullable().unique();
    t.string('prefix', 16).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('last_used_at').nullable();
    t.bigInteger('revoked_at').nullable();
  });
  await knex.schema.createTable('audit_log', (t) => {
    utf8mb4(knex, t);
    t.bigIncrements('id').primary();
    t.bigInteger('at').notNullable();
    t.string('actor', 128).notNullable();
    t.string('role', 16).nullable();
    t.string('action', 64).notNullable();
    t.string('target_type', 32).nullable();
    t.string('target_id', 128).nullable();
    t.string('ip', 64).nullable();
    t.boolean('ok').notNullable().defaultTo(true);
    t.text('details').nullable();
    t.index(['at']);
    t.index(['action']);
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const t of ['audit_log', 'api_tokens', 'sessions', 'users', 'agent_connections', 'agents', 'settings']) {
    await knex.schema.dropTableIfExists(t);
  }
}
