import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/** API tokens get an optional expiry and a scope (the highest role they act with). */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_tokens', (t) => {
    t.string('scope', 16).nullable(); // null: the owner's role, whatever it is when the token is used
    t.bigInteger('expires_at').nullable(); // null: no expiry
  });
}

export async function down(knex: Knex): Promise<void> {
  await dropColumns(knex, 'api_tokens', ['expires_at', 'scope']);
}
