import type { Knex } from 'knex';
import { utf8mb4 } from './util.js';

/** Live agent configuration: rules (one agent, or a selector) with the settings pushed to matching agents. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('agent_config_rules', (t) => {
    utf8mb4(knex, t);
    t.string('id', 36).primary();
    // Exactly one of agent_id and selector is set.
    t.string('agent_id', 128).nullable();
    t.text('selector').nullable();
    // Among selector rules: higher wins per key; an agent rule wins over every selector rule.
    t.integer('priority').notNullable();
    t.string('description', 255).notNullable();
    // JSON object: AgentSettings (protocol/agent-config.ts).
    t.text('settings').notNullable();
    t.string('created_by', 128).notNullable();
    t.string('updated_by', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.index(['agent_id'], 'agent_config_rules_agent_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('agent_config_rules');
}
