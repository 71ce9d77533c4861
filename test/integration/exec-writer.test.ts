/**
 * The batched writer of executions (ExecWriteBatcher, storing through ExecRepo.storeBatch) on a real SQLite file and a real MariaDB: row
 * updates of many executions are stored in a few multi-row statements on MariaDB and through
 * cached prepared statements on SQLite (not a knex query per row), with
 * every value intact: per-row values, shared values, NULLs, booleans, quotes, and the column
 * named `signal` (a reserved word in MySQL).
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateLatest, openDb } from '../../server/db/db.js';
import { ExecRepo, type ExecPatch } from '../../server/exec/repo.js';
import { ExecWriteBatcher } from '../../server/exec/write-batcher.js';
import { UPDATE_ROWS } from '../../server/exec/row-updates.js';
import type { Execution } from '../../server/exec/model.js';
import { executionRow, taskRow } from '../helpers/exec-rows.js';
import { cleanup, databases, dbUrlFor, tmpDir, type DbKind } from '../helpers/harness.js';

const dbs = await databases();
afterAll(cleanup);

const log = {
  info() {},
  warn() {},
  error() {},
  debug() {},
  child() {
    return log;
  },
};

/** Runs `fn` on a fresh, migrated database of `kind`, dropped afterwards. */
async function withDb(
  kind: DbKind,
  name: string,
  fn: (db: ReturnType<typeof openDb>['db'], dialect: ReturnType<typeof openDb>['dialect']) => Promise<void>,
): Promise<void> {
  const dir = tmpDir(name);
  const { url, drop } = await dbUrlFor(kind, dir);
  const { db, dialect } = openDb(url, path.join(dir, 'data'));
  try {
    await migrateLatest(db);
    await fn(db, dialect);
  } finally {
    await db.destroy();
    await drop();
  }
}

describe.each(dbs)('ExecWriteBatcher row updates (%s)', (kind) => {
  it('stores a wave of per-row results in a few statements, every value intact', async () => {
    await withDb(kind, 'exec-writer', async (db, dialect) => {
      const repo = new ExecRepo(db, dialect);
      const n = 1000;
      const t = taskRow(n);
      const execs = Array.from({ length: n }, (_, i) => executionRow(t.id, i));
      await repo.createTask(t, execs);
      const writer = new ExecWriteBatcher(repo, log as never, {
        intervalMs: 60_000,
        batchBytes: 1 << 30,
        highWaterBytes: 1 << 30,
        maxFlushBytes: 1 << 30,
        onPressure: () => {},
        retryInitialMs: 100,
        retryMaxMs: 1000,
      });
      // Every UPDATE: knex's queries, and on MySQL the prepared statements run on a pooled connection.
      const updates: string[] = [];
      const onQuery = (q: { sql: string }) => {
        if (/^update/i.test(q.sql)) updates.push(q.sql);
      };
      db.on('query', onQuery);
      const client = db.client as { acquireConnection(): Promise<{ execute?: (o: { sql: string }, ...rest: unknown[]) => unknown }> };
      const acquire = client.acquireConnection.bind(client);
      const spied = new WeakSet<object>();
      client.acquireConnection = async () => {
        const conn = await acquire();
        if (kind === 'mysql' && conn.execute && !spied.has(conn)) {
          spied.add(conn);
          const execute = conn.execute.bind(conn);
          conn.execute = (o, ...rest) => {
            if (/^update/i.test(o.sql)) updates.push(o.sql);
            return execute(o, ...rest);
          };
        }
        return conn;
      };

      // A dispatch wave (shared values), then results that differ per row, merged per execution
      // as the writer does between flushes; a tenth fail with a signal and a quoted reason.
      const t0 = 1_790_000_000_000;
      const expected = new Map<string, Execution>();
      for (const [i, e] of execs.entries()) {
        const patches: ExecPatch[] = [
          { status: 'dispatched', dispatchedAt: t0 },
          { status: 'running', startedAt: t0 + i, containment: 'pgid' },
          { nextSeq: 1, outputBytes: 64 + i },
          i % 10 === 0
            ? { status: 'failed', exitCode: null, signal: 'SIGKILL', finishedAt: t0 + 2 * i + 1, truncated: true, reason: `it's "killed" (${i})` }
            : { status: 'succeeded', exitCode: 0, signal: null, finishedAt: t0 + 2 * i + 1, truncated: false, reason: null },
        ];
        for (const p of patches) writer.update(e.id, p);
        expected.set(e.id, Object.assign({ ...e }, ...patches) as Execution);
      }
      // Output: a small chunk per execution, and one chunk of 150,000 bytes (stored in three parts).
      for (const [i, e] of execs.entries()) writer.output(e.id, 0, i % 2 ? 'stderr' : 'stdout', Buffer.from(`out ${i} `.repeat(8)));
      const big = Buffer.alloc(150_000);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      writer.output(execs[3]!.id, 1, 'stdout', big);
      // One execution whose only change is an undefined value writes nothing and fails nothing.
      writer.update(execs[1]!.id, { reason: undefined });
      await writer.flush();
      db.off('query', onQuery);

      const stored = await repo.executionsOf(t.id);
      expect(stored).toHaveLength(n);
      for (const s of stored) expect(s).toEqual(expected.get(s.id));
      for (const [i, e] of execs.entries()) {
        const out = await repo.outputPage(e.id, 0, 10);
        expect(
          out.map((o) => [o.seq, o.stream]),
          e.id,
        ).toEqual(
          i === 3
            ? [
                [0, 2],
                [1, 1],
                [1, 1],
                [1, 1],
              ]
            : [[0, i % 2 ? 2 : 1]],
        );
        expect(out[0]!.data.toString()).toBe(`out ${i} `.repeat(8));
        if (i === 3) expect(Buffer.concat(out.slice(1).map((o) => o.data)).equals(big)).toBe(true);
      }
      if (kind === 'mysql') {
        // One column set for all but execution 1 (failed rows write the same columns as succeeded
        // ones), in UPDATE_ROWS-row statements, and one for execution 1: not one statement per row.
        expect(n - 1).toBeLessThanOrEqual(UPDATE_ROWS);
        expect(updates.length).toBe(2);
        // Linear in the rows: a join to the rows' values, no CASE list scanned per row.
        for (const u of updates) expect(u).not.toMatch(/\bCASE\b/i);
      } else {
        // SQLite: statements prepared once on the connection, not a knex query per row.
        expect(updates).toEqual([]);
      }
      await writer.stop();
    });
  });

  it('creates a task with every execution row as given', async () => {
    await withDb(kind, 'exec-create', async (db, dialect) => {
      const repo = new ExecRepo(db, dialect);
      // 1,500 rows: more than one multi-row statement on MySQL.
      const n = 1500;
      const t = taskRow(n);
      const execs = Array.from({ length: n }, (_, i) => {
        const e = executionRow(t.id, i);
        if (i % 5 === 1) Object.assign(e, { status: 'skipped', reason: `agent "offline" 'quoted' ${i}`, finishedAt: 1_700_000_000_000 + i });
        if (i % 5 === 2) Object.assign(e, { queuedUntil: 1_800_000_000_123 + i });
        if (i % 5 === 3) Object.assign(e, { status: 'policy_denied', reason: 'ünïcode ✓', finishedAt: 5 });
        if (i === 4) Object.assign(e, { truncated: true, outputBytes: 2 ** 40, nextSeq: 7, signal: 'SIGKILL', exitCode: -1, containment: 'systemd' });
        return e;
      });
      await repo.createTask(t, execs);
      const stored = new Map((await repo.executionsOf(t.id)).map((e) => [e.id, e]));
      expect(stored.size).toBe(n);
      for (const e of execs) expect(stored.get(e.id)).toEqual(e);
    });
  });

  it('a cluster node writes the rows of the tasks it owns and leaves those another node took over', async () => {
    await withDb(kind, 'exec-writer-fence', async (db, dialect) => {
      const repo = new ExecRepo(db, dialect, 'node-a');
      const mine = { ...taskRow(3), ownerNode: 'node-a' };
      const theirs = { ...taskRow(3), ownerNode: 'node-b' };
      const execsOf = new Map<string, Execution[]>();
      for (const t of [mine, theirs]) {
        const execs = Array.from({ length: 3 }, (_, i) => executionRow(t.id, i));
        execsOf.set(t.id, execs);
        await repo.createTask(t, execs);
      }
      const all = [...execsOf.values()].flat();
      await repo.storeBatch([], new Map(all.map((e, i) => [e.id, { status: 'succeeded', exitCode: 0, finishedAt: 1_790_000_000_000 + i }])));
      expect((await repo.executionsOf(mine.id)).map((e) => [e.status, e.exitCode])).toEqual(Array(3).fill(['succeeded', 0]));
      expect((await repo.executionsOf(theirs.id)).map((e) => [e.status, e.exitCode])).toEqual(Array(3).fill(['pending', null]));
    });
  });
});
