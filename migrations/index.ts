import type { Knex } from 'knex';
import * as createCoreTables from './202611260700_create_core_tables.js';
import * as createTerminalSessions from './202611270900_create_terminal_sessions.js';
import * as createUpdateTables from './202611271000_create_update_tables.js';
import * as createExecTables from './202611271100_create_exec_tables.js';
import * as createScriptTables from './202611301600_create_script_tables.js';
import * as createScheduleTables from './202611301700_create_schedule_tables.js';
import * as addExecutionReconciledAt from './202611301700_add_execution_reconciled_at.js';
import * as addTokenScopeExpiry from './202611301710_add_token_scope_expiry.js';
import * as createNotificationTables from './202611301800_create_notification_tables.js';
import * as addHostPolicy from './202611301837_add_host_policy.js';
import * as createEnrollmentTokens from './202611301850_create_enrollment_tokens.js';
import * as removeStoredEnrollToken from './202611301851_remove_stored_enroll_token.js';
import * as addAgentEnrolLabels from './202611301900_add_agent_enrol_labels.js';
import * as createFileTables from './202611302000_create_file_tables.js';
import * as addTaskName from './202611302010_add_task_name.js';
import * as createAgentConfigRules from './202611302030_create_agent_config_rules.js';
import * as addAgentOwner from './202611302300_add_agent_owner.js';
import * as addDashboardIndexes from './202611302330_add_dashboard_indexes.js';
import * as addWaveGates from './202611302340_add_wave_gates.js';
import * as repairMysqlTables from './202612010500_repair_mysql_tables.js';
import * as addTaskOwnerNode from './202612010600_add_task_owner_node.js';

/**
 * Every migration in order. Listed statically (not read from a folder) so the bundled server
 * carries them. Names follow YYYYMMDDHHMM_verb_noun; add new ones at the end.
 */
export const migrations: ReadonlyArray<readonly [string, { up(k: Knex): Promise<void>; down(k: Knex): Promise<void> }]> = [
  ['202611260700_create_core_tables', createCoreTables],
  ['202611270900_create_terminal_sessions', createTerminalSessions],
  ['202611271000_create_update_tables', createUpdateTables],
  ['202611271100_create_exec_tables', createExecTables],
  ['202611301600_create_script_tables', createScriptTables],
  ['202611301700_create_schedule_tables', createScheduleTables],
  ['202611301700_add_execution_reconciled_at', addExecutionReconciledAt],
  ['202611301710_add_token_scope_expiry', addTokenScopeExpiry],
  ['202611301800_create_notification_tables', createNotificationTables],
  ['202611301837_add_host_policy', addHostPolicy],
  ['202611301850_create_enrollment_tokens', createEnrollmentTokens],
  ['202611301851_remove_stored_enroll_token', removeStoredEnrollToken],
  ['202611301900_add_agent_enrol_labels', addAgentEnrolLabels],
  ['202611302000_create_file_tables', createFileTables],
  ['202611302010_add_task_name', addTaskName],
  ['202611302030_create_agent_config_rules', createAgentConfigRules],
  ['202611302300_add_agent_owner', addAgentOwner],
  ['202611302330_add_dashboard_indexes', addDashboardIndexes],
  ['202611302340_add_wave_gates', addWaveGates],
  ['202612010500_repair_mysql_tables', repairMysqlTables],
  ['202612010600_add_task_owner_node', addTaskOwnerNode],
];

/** knex MigrationSource over the static list. */
export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => migrations.map(([name]) => name),
  getMigrationName: (name) => name,
  getMigration: async (name) => {
    const m = migrations.find(([n]) => n === name);
    if (!m) throw new Error(`unknown migration ${name}`);
    return m[1];
  },
};
