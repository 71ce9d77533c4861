import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/**
 * agents.owner_node: the server node holding the agent's socket (null: not connected anywhere);
 * agents.conn_generation: raised by every accepted connection. A node writes for an agent only
 * while it owns it (presence) or while its generation is current (release on disconnect), so a
 * node whose socket was replaced by a newer one on another node cannot overwrite the agent's state.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.string('owner_node', 64).nullable();
    t.bigInteger('conn_generation').notNullable().defaultTo(0);
    t.index(['owner_node'], 'agents_owner_node_idx');
  });
  // The cluster's dead-node sweep asks which nodes hold open connections (and closes them).
  await knex.schema.alterTable('agent_connections', (t) => {
    t.index(['disconnected_at', 'node'], 'agent_connections_open_node_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agent_connections', (t) => {
    t.dropIndex(['disconnected_at', 'node'], 'agent_connections_open_node_idx');
  });
  await knex.schema.alterTable('agents', (t) => {
    t.dropIndex(['owner_node'], 'agents_owner_node_idx');
  });
  await dropColumns(knex, 'agents', ['owner_node', 'conn_generation']);
}
