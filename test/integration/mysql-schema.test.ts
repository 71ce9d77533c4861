/**
 * The schema on MariaDB as the server itself creates it: through openDb (the server's own mysql2
 * client class), not a plain knex client. The migrations once tested the configured client's name
 * to know they ran on MySQL; with the server's class that test said "not MySQL", so tables took the
 * database's default character set and the run `state` columns stayed too narrow for
 * `awaiting_approval` (a waiting rollout or distribution was stored as still soaking). These tests
 * prove a fresh database (even one whose default is latin1) gets the right schema, and that a
 * database left wrong by those migrations is repaired by 202612010500_repair_mysql_tables.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { migrationSource } from '../../migrations/index.js';
import { convertTables } from '../../migrations/util.js';
import { openDb, type Db } from '../../server/db/db.js';
import { cleanup, createMysqlDatabase, databases, tmpDir } from '../helpers/harness.js';

afterAll(cleanup);

const LATIN1 = { charset: 'latin1', collation: 'latin1_swedish_ci' };
const WAVE_GATES = '202611302340_add_wave_gates';

async function tableCollations(db: Db): Promise<Record<string, string>> {
  const rows = (await db('information_schema.tables')
    .select({ name: 'table_name', collation: 'table_collation' })
    .whereRaw('table_schema = database()')
    .andWhere('table_type', 'BASE TABLE')
    .andWhereNot('table_name', 'like', 'knex\\_%')) as { name: string; collation: string }[];
  return Object.fromEntries(rows.map((r) => [r.name, r.collation]));
}

async function columnCollations(db: Db): Promise<string[]> {
  const rows = (await db('information_schema.columns')
    .distinct({ c: 'collation_name' })
    .whereRaw('table_schema = database()')
    .whereNotNull('collation_name')
    .andWhereNot('table_name', 'like', 'knex\\_%')) as { c: string }[];
  return rows.map((r) => r.c).sort();
}

/** Every foreign key: table, name, columns, referenced table and columns, rules. */
async function foreignKeys(db: Db): Promise<string[]> {
  const [rows] = (await db.raw(
    `SELECT CONCAT_WS(' ', k.table_name, k.constraint_name, k.column_name, k.referenced_table_name, k.referenced_column_name, r.delete_rule, r.update_rule) AS fk
       FROM information_schema.key_column_usage k
       JOIN information_schema.referential_constraints r ON r.constraint_schema = k.constraint_schema AND r.constraint_name = k.constraint_name
      WHERE k.table_schema = database() AND k.referenced_table_name IS NOT NULL`,
  )) as [{ fk: string }[]];
  return rows.map((r) => r.fk).sort();
}

async function stateWidths(db: Db): Promise<Record<string, number>> {
  const rows = (await db('information_schema.columns')
    .select({ t: 'table_name', w: 'character_maximum_length' })
    .whereRaw('table_schema = database()')
    .andWhere('column_name', 'state')
    .whereIn('table_name', ['rollouts', 'file_distributions'])) as { t: string; w: number }[];
  return Object.fromEntries(rows.map((r) => [r.t, Number(r.w)]));
}

/** A row in each of the tables the bug touched: an emoji name, and a distribution awaiting approval. */
async function roundTrip(db: Db): Promise<void> {
  const now = Date.now();
  await db('agents').insert({
    id: 'a1',
    name: 'host-🚀-東京',
    hostname: 'h',
    ips: '[]',
    platform: 'linux',
    arch: 'x64',
    os: 'o',
    version: '1',
    labels: '{"team":"🛰️"}',
    groups: '[]',
    secret_hash: 'x'.repeat(64),
    created_at: now,
  });
  expect((await db('agents').where({ id: 'a1' }).first()).name).toBe('host-🚀-東京');
  await db('managed_files').insert({ id: 'f1', path: '/etc/ü.conf', mode: 0o644, latest_revision: 1, created_by: 'admin', created_at: now, updated_at: now });
  await db('file_distributions').insert({
    id: 'd1',
    file_id: 'f1',
    revision: 1,
    kind: 'apply',
    selector: '*',
    waves: '["100%"]',
    max_failures: 0,
    state: 'awaiting_approval',
    reason: 'wave 1 done; approve to start wave 2',
    current_wave: 0,
    failure_base: 0,
    created_by: 'admin',
    created_at: now,
    updated_at: now,
  });
  expect((await db('file_distributions').where({ id: 'd1' }).first()).state).toBe('awaiting_approval');
  // Foreign keys still hold after the tables were converted.
  await expect(
    db('file_distributions').insert({
      id: 'd2',
      file_id: 'nope',
      revision: 1,
      kind: 'apply',
      selector: '*',
      waves: '[]',
      max_failures: 0,
      state: 'running',
      current_wave: 0,
      failure_base: 0,
      created_by: 'a',
      created_at: now,
      updated_at: now,
    }),
  ).rejects.toThrow(/foreign key/i);
  // String columns of different tables compare without an "illegal mix of collations".
  const joined = await db('file_distributions as d')
    .join('managed_files as f', 'f.id', 'd.file_id')
    .join('agents as a', 'a.id', db.raw('?', ['a1']))
    .first('a.name', 'd.state');
  expect(joined).toEqual({ name: 'host-🚀-東京', state: 'awaiting_approval' });
}

const kinds = await databases();
describe.skipIf(!kinds.includes('mysql'))('MariaDB schema through the server client', () => {
  it('a fresh database whose default is latin1 gets utf8mb4 tables and run states wide enough for awaiting_approval', async () => {
    const m = await createMysqlDatabase(LATIN1);
    const { db } = openDb(m.url, tmpDir('mysql-schema'));
    try {
      await db.migrate.latest({ migrationSource });
      const tables = await tableCollations(db);
      expect(Object.keys(tables).length).toBeGreaterThan(20);
      expect(Object.entries(tables).filter(([, c]) => c !== 'utf8mb4_unicode_ci')).toEqual([]);
      expect(await columnCollations(db)).toEqual(['utf8mb4_unicode_ci']);
      expect(await stateWidths(db)).toEqual({ rollouts: 32, file_distributions: 32 });
      await roundTrip(db);
    } finally {
      await db.destroy();
      await m.drop();
    }
  });

  it('a database the earlier migrations left wrong (latin1 tables, 16-character states) is repaired, keeping its rows', async () => {
    const m = await createMysqlDatabase(LATIN1);
    const { db } = openDb(m.url, tmpDir('mysql-schema'));
    try {
      // Migrate up to the wave gates, then make the schema what the broken test for MySQL produced.
      for (;;) {
        const [done] = (await db.migrate.list({ migrationSource })) as [{ name: string }[], unknown[]];
        if (done.at(-1)?.name === WAVE_GATES) break;
        await db.migrate.up({ migrationSource });
      }
      await db('audit_log').insert({ at: Date.now(), actor: 'ädmin', action: 'user.login', ok: true });
      const fks = await foreignKeys(db);
      expect(fks.length).toBeGreaterThan(5);
      await convertTables(db, Object.keys(await tableCollations(db)), LATIN1.charset, LATIN1.collation);
      expect(await foreignKeys(db)).toEqual(fks); // the conversion keeps every key as it was
      for (const t of ['rollouts', 'file_distributions']) await db.raw('ALTER TABLE ?? MODIFY ?? VARCHAR(16) NOT NULL', [t, 'state']);
      expect(await stateWidths(db)).toEqual({ rollouts: 16, file_distributions: 16 });
      expect(Object.values(await tableCollations(db))).not.toContain('utf8mb4_unicode_ci');

      await db.migrate.latest({ migrationSource });
      expect(await foreignKeys(db)).toEqual(fks);
      expect(Object.entries(await tableCollations(db)).filter(([, c]) => c !== 'utf8mb4_unicode_ci')).toEqual([]);
      expect(await columnCollations(db)).toEqual(['utf8mb4_unicode_ci']);
      expect(await stateWidths(db)).toEqual({ rollouts: 32, file_distributions: 32 });
      expect((await db('audit_log').where({ action: 'user.login' }).first()).actor).toBe('ädmin');
      await roundTrip(db);
    } finally {
      await db.destroy();
      await m.drop();
    }
  });
});
