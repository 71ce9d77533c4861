import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/** Notifications: rules (which events go to which webhook) and the delivery log. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('notification_rules', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('name', 128).notNullable().unique();
    // JSON array of event names.
    t.text('events').notNullable();
    t.string('channel', 16).notNullable();
    t.text('url').notNullable();
    // HMAC key of the webhook signature; never returned by the API.
    t.string('secret', 256).nullable();
    t.double('offline_minutes').notNullable();
    t.boolean('enabled').notNullable();
    t.string('created_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });
  await knex.schema.createTable('notification_deliveries', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    t.string('rule_id', 36).notNullable().references('id').inTable('notification_rules').onDelete('CASCADE');
    t.string('event', 64).notNullable();
    t.text('payload', 'mediumtext').notNullable();
    // pending (more attempts to come) | delivered | failed (gave up)
    t.string('status', 16).notNullable();
    t.integer('attempts').notNullable();
    t.integer('last_code').nullable();
    t.text('last_error').nullable();
    // JSON array of {at, code, error, ms}: every attempt's outcome.
    t.text('log').notNullable();
    t.bigInteger('next_attempt_at').nullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.index(['rule_id', 'created_at'], 'notification_deliveries_rule_created_index');
    t.index(['status', 'next_attempt_at'], 'notification_deliveries_status_next_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('notification_deliveries');
  await knex.schema.dropTableIfExists('notification_rules');
}
