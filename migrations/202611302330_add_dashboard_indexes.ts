import type { Knex } from 'knex';

/**
 * Indexes for the dashboard and the audit filters: the failure trend and "failed recent runs" read
 * executions by finish time; the audit log is filtered by actor and by target.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('executions', (t) => {
    t.index(['finished_at'], 'executions_finished_at_index');
  });
  await knex.schema.alterTable('audit_log', (t) => {
    t.index(['actor', 'at'], 'audit_log_actor_at_index');
    t.index(['target_id'], 'audit_log_target_id_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('audit_log', (t) => {
    t.dropIndex(['actor', 'at'], 'audit_log_actor_at_index');
    t.dropIndex(['target_id'], 'audit_log_target_id_index');
  });
  await knex.schema.alterTable('executions', (t) => {
    t.dropIndex(['finished_at'], 'executions_finished_at_index');
  });
}
