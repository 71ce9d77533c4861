/**
 * Rolling migrations back keeps the data they do not own. On SQLite knex drops a column by
 * rebuilding the table, and with foreign keys on (as the server opens it) dropping the old table
 * cascade-deletes every row that references it: all executions of `tasks`, all output of
 * `executions`. Down migrations must change tables in place.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { migrationSource, migrations } from '../../migrations/index.js';
import { openDb } from '../../server/db/db.js';
import { cleanup, createMysqlDatabase, databases, tmpDir } from '../helpers/harness.js';

const BASE = '202611271100_create_exec_tables';

describe.each(await databases())('migrations keep data on the way down and up again (%s)', (kind) => {
  afterAll(cleanup);

  it(`rolls every migration after ${BASE} back and forth without losing tasks, executions or output`, async () => {
    const m = kind === 'mysql' ? await createMysqlDatabase() : null;
    const { db } = openDb(m?.url ?? `sqlite:${tmpDir('mig-data')}/m.db`, tmpDir('mig-data-dir'));
    try {
      await db.migrate.latest({ migrationSource });
      const now = Date.now();
      await db('tasks').insert({
        id: 't1',
        script: 'echo hi',
        script_sha256: 'x'.repeat(64),
        interpreter: 'bash',
        args: '[]',
        env: '{}',
        timeout_sec: 60,
        targets: '{}',
        created_by: 'admin',
        created_at: now,
        status: 'succeeded',
        total: 1,
      });
      await db('executions').insert({ id: 'e1', task_id: 't1', agent_id: 'a1', agent_name: 'host', status: 'succeeded', exit_code: 0, next_seq: 1 });
      await db('execution_output').insert({ execution_id: 'e1', seq: 0, part: 0, stream: 1, data: Buffer.from('hi\n') });

      const after = migrations.length - 1 - migrations.findIndex(([n]) => n === BASE);
      expect(after).toBeGreaterThan(0);
      for (let i = 0; i < after; i++) await db.migrate.down({ migrationSource });
      const [done] = (await db.migrate.list({ migrationSource })) as [{ name: string }[], unknown[]];
      expect(done.map((d) => d.name).at(-1)).toBe(BASE);

      const rows = async () => ({
        tasks: (await db('tasks').count({ n: '*' }))[0]!['n'],
        executions: (await db('executions').count({ n: '*' }))[0]!['n'],
        output: (await db('execution_output').select('data')).map((r: { data: Buffer }) => Buffer.from(r.data).toString()),
      });
      expect(await rows()).toEqual({ tasks: 1, executions: 1, output: ['hi\n'] });
      await db.migrate.latest({ migrationSource });
      expect(await rows()).toEqual({ tasks: 1, executions: 1, output: ['hi\n'] });
    } finally {
      await db.destroy();
      await m?.drop();
    }
  });
});
