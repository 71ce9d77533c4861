import type { Knex } from 'knex';
import { dropColumns } from './util.js';

/**
 * tasks.owner_node: the server node whose scheduler runs the task (issue 12: the node it was
 * created on). In a cluster a node restores, at start, only the active tasks it owns; other nodes
 * send cancels to the owner. Older rows have none (whichever node starts takes them, as before).
 * A plain nullable column: nothing dialect-specific (the index serves the start-up read).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tasks', (t) => {
    t.string('owner_node', 255).nullable();
    t.index(['status', 'owner_node'], 'tasks_status_owner_node_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('tasks', (t) => {
    t.dropIndex(['status', 'owner_node'], 'tasks_status_owner_node_idx');
  });
  await dropColumns(knex, 'tasks', ['owner_node']);
}
