/**
 * The execution writer's thread (server/exec/store-thread.ts, the built dist/exec-store-worker.js)
 * on a real MariaDB: batches handed over through ExecWriteBatcher are stored whole (output parts
 * byte for byte, also parts that are views into larger buffers; every patched column); a failed
 * batch comes back with the database's error code (the failures classifier reads it), the batches
 * given after it are refused unwritten until reset(), and a thread that dies fails what it held
 * and is replaced. MariaDB only (SQLite writes on the main thread); mandatory with CI=true.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { migrateLatest, openDb } from '../../server/db/db.js';
import { ExecRepo, type ExecPatch, type OutputRow } from '../../server/exec/repo.js';
import { ThreadedStore } from '../../server/exec/store-thread.js';
import { ExecWriteBatcher } from '../../server/exec/write-batcher.js';
import { executionRow, taskRow } from '../helpers/exec-rows.js';
import { cleanup, createMysqlDatabase, databases, ROOT, tmpDir } from '../helpers/harness.js';

const dbs = await databases();
afterAll(cleanup);

const SCRIPT = pathToFileURL(path.join(ROOT, 'dist', 'exec-store-worker.js'));
const log = { info() {}, warn() {}, error() {}, debug() {}, child: () => log } as never;
const options = (url: string) => ({
  dbUrl: url,
  dataDir: tmpDir('writer-thread'),
  timeouts: { connectTimeoutMs: 5000, acquireTimeoutMs: 10_000 },
  queryTimeoutMs: 15_000,
});

/** Runs `fn` with a fresh migrated MariaDB database, its ExecRepo, and a ThreadedStore writing bulk output through that repo (counted). */
async function withStore(
  fn: (x: { db: ReturnType<typeof openDb>['db']; repo: ExecRepo; store: ThreadedStore; inlineBatches: () => number }) => Promise<void>,
): Promise<void> {
  const { url, drop } = await createMysqlDatabase();
  const { db } = openDb(url, tmpDir('writer-thread'));
  const repo = new ExecRepo(db, 'mysql');
  let inline = 0;
  const counted = { storeBatch: (r: OutputRow[], u: ReadonlyMap<string, ExecPatch>) => (inline++, repo.storeBatch(r, u)) };
  const store = new ThreadedStore(SCRIPT, options(url), counted, log);
  try {
    await migrateLatest(db);
    await fn({ db, repo, store, inlineBatches: () => inline });
  } finally {
    await store.close();
    await db.destroy();
    await drop();
  }
}

describe.skipIf(!dbs.includes('mysql'))('execution writer thread (MariaDB)', () => {
  it('is built next to the server', () => {
    expect(fs.existsSync(SCRIPT)).toBe(true);
  });

  it('stores what the writer hands over, pipelined, every byte and column intact; bulk output in order from the main thread', async () => {
    await withStore(async ({ db, repo, store, inlineBatches }) => {
      const n = 600;
      const t = taskRow(n);
      const execs = Array.from({ length: n }, (_, i) => executionRow(t.id, i));
      await repo.createTask(t, execs);
      const writer = new ExecWriteBatcher(store, log, {
        intervalMs: 5,
        batchUpdates: 100,
        batchBytes: 1 << 20,
        highWaterBytes: 64 << 20,
        maxFlushBytes: 8 << 20,
        onPressure() {},
        retryInitialMs: 50,
        retryMaxMs: 200,
      });
      // Output: each chunk a view into the middle of a larger buffer (as a socket read is); one
      // larger than a BLOB part (stored as two parts); every 150th execution 400 KB (bulk: its
      // flush is written from the main thread, between flushes written by the thread).
      const big = Buffer.alloc(70_000);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      const bulk = Buffer.alloc(400_000);
      for (let i = 0; i < bulk.length; i++) bulk[i] = (i * 13) & 0xff;
      const line = (id: string) => Buffer.from(`line of ${id} with ünïcode and \\0 \0 end\n`);
      const acked: string[] = [];
      // First every execution's progress, then its result: the result must win wherever each went.
      for (const e of execs) writer.update(e.id, { status: 'running', startedAt: 1 });
      execs.forEach((e, i) => {
        const backing = Buffer.alloc(4096, 0x2e);
        const l = line(e.id);
        l.copy(backing, 100);
        writer.output(e.id, 0, 'stdout', i === 7 ? big : backing.subarray(100, 100 + l.length));
        if (i % 150 === 149) writer.output(e.id, 1, 'stdout', bulk);
        writer.update(e.id, {
          status: i % 3 ? 'succeeded' : 'failed',
          exitCode: i % 3 ? 0 : 2,
          startedAt: 1000 + i,
          finishedAt: 2000 + i,
          nextSeq: 1,
          outputBytes: l.length,
          signal: i === 5 ? 'SIGTERM' : null,
          truncated: i === 9,
        });
        writer.afterFlush(() => acked.push(e.id), true);
      });
      await writer.drain();
      await writer.stop();
      expect(acked).toHaveLength(n);
      expect(inlineBatches()).toBeGreaterThan(0);
      expect((store as unknown as { seq: number }).seq).toBeGreaterThan(inlineBatches());
      const rows = (await db('executions').where({ task_id: t.id })) as Array<Record<string, unknown>>;
      const byId = new Map(rows.map((r) => [String(r['id']), r]));
      execs.forEach((e, i) => {
        const r = byId.get(e.id)!;
        expect(r['status']).toBe(i % 3 ? 'succeeded' : 'failed');
        expect(Number(r['exit_code'])).toBe(i % 3 ? 0 : 2);
        expect(Number(r['started_at'])).toBe(1000 + i);
        expect(Number(r['finished_at'])).toBe(2000 + i);
        expect(r['signal']).toBe(i === 5 ? 'SIGTERM' : null);
        expect(Boolean(r['truncated'])).toBe(i === 9);
      });
      const out = (await db('execution_output').orderBy(['execution_id', 'seq', 'part'])) as Array<{
        execution_id: string;
        seq: number;
        part: number;
        data: Buffer;
      }>;
      const bySeq = new Map<string, Buffer>();
      for (const o of out) {
        const k = `${o.execution_id}/${o.seq}`;
        bySeq.set(k, Buffer.concat([bySeq.get(k) ?? Buffer.alloc(0), o.data]));
      }
      execs.forEach((e, i) => {
        if (i === 7) expect(bySeq.get(`${e.id}/0`)!.equals(big)).toBe(true);
        else expect(bySeq.get(`${e.id}/0`)!.toString()).toBe(line(e.id).toString());
        if (i % 150 === 149) expect(bySeq.get(`${e.id}/1`)!.equals(bulk)).toBe(true);
        else expect(bySeq.has(`${e.id}/1`)).toBe(false);
      });
      expect(out.filter((o) => o.execution_id === execs[7]!.id).map((o) => o.part)).toEqual([0, 1]);
    });
  });

  it('returns a failure with its database code, refuses later batches until reset, and replaces a thread that died', async () => {
    await withStore(async ({ db, repo, store }) => {
      const t = taskRow(2);
      const [a, b] = [executionRow(t.id, 0), executionRow(t.id, 1)];
      await repo.createTask(t, [a, b]);
      const part = (id: string, seq: number): OutputRow => ({ execution_id: id, seq, part: 0, stream: 1, data: Buffer.from(`s${seq}`) });
      // A reason longer than its column: strict mode refuses the statement.
      const bad = store.storeBatch([part(a.id, 0)], new Map([[a.id, { status: 'failed' as const, reason: 'x'.repeat(5000) }]]));
      // Given before the failure is known: refused unwritten, not committed out of order.
      const after = store.storeBatch([part(a.id, 0)], new Map([[a.id, { status: 'running' as const }]]));
      const err = (await bad.then(
        () => null,
        (e: unknown) => e,
      )) as { code?: string; message: string } | null;
      expect(err?.code).toBe('ER_DATA_TOO_LONG');
      expect(err?.message).toMatch(/too long/i);
      await expect(after).rejects.toThrow(/earlier execution write failed/);
      await expect(store.storeBatch([part(a.id, 0)], new Map())).rejects.toThrow(/earlier execution write failed/);
      expect(await db('execution_output').where({ execution_id: a.id })).toHaveLength(0);
      expect((await db('executions').where({ id: a.id }).first())!['status']).toBe('pending');
      store.reset();
      await store.storeBatch([part(a.id, 0)], new Map([[a.id, { status: 'running' as const }]]));
      expect(await db('execution_output').where({ execution_id: a.id })).toHaveLength(1);
      expect((await db('executions').where({ id: a.id }).first())!['status']).toBe('running');

      // The thread dies with a batch in hand: that batch fails, later ones too until reset; then a new thread writes.
      const worker = (store as unknown as { worker: { terminate(): Promise<number> } | null }).worker!;
      const held = store.storeBatch([part(b.id, 0)], new Map());
      void worker.terminate();
      await expect(held).rejects.toThrow(/exited|earlier/);
      await expect(store.storeBatch([part(b.id, 1)], new Map())).rejects.toThrow(/earlier execution write failed/);
      store.reset();
      await store.storeBatch([part(b.id, 0), part(b.id, 1)], new Map([[b.id, { status: 'succeeded' as const, exitCode: 0 }]]));
      expect((await db('execution_output').where({ execution_id: b.id })).map((r: { seq: number }) => r.seq).sort()).toEqual([0, 1]);
      expect((store as unknown as { worker: unknown }).worker).not.toBe(worker);
    });
  });

  it('keeps the order of batches across the thread and the main thread (bulk output)', async () => {
    await withStore(async ({ db, repo, store }) => {
      const n = 3000;
      const t = taskRow(n);
      const execs = Array.from({ length: n }, (_, i) => executionRow(t.id, i));
      await repo.createTask(t, execs);
      const [x, y] = [execs[0]!.id, execs[1]!.id];
      const bulk = (id: string, seq: number, mb: number): OutputRow[] =>
        Array.from({ length: Math.ceil((mb * 1e6) / 60_000) }, (_, part) => ({ execution_id: id, seq, part, stream: 1, data: Buffer.alloc(60_000, 0x61) }));
      // A slow thread batch (3,000 row updates), then a bulk one on the main thread: the bulk one
      // waits for it, so x ends as the later batch says.
      const a = store.storeBatch([], new Map(execs.map((e) => [e.id, { status: 'running' as const, startedAt: 1 }])));
      const b = store.storeBatch(bulk(x, 0, 0.5), new Map([[x, { status: 'succeeded' as const, exitCode: 0 }]]));
      // A slow bulk batch on the main thread, then a small thread batch: the thread's waits for it.
      const c = store.storeBatch(bulk(y, 0, 6), new Map([[y, { status: 'running' as const, startedAt: 2 }]]));
      const d = store.storeBatch([], new Map([[y, { status: 'failed' as const, exitCode: 3 }]]));
      await Promise.all([a, b, c, d]);
      expect((await db('executions').where({ id: x }).first())!['status']).toBe('succeeded');
      expect((await db('executions').where({ id: y }).first())!['status']).toBe('failed');
      expect(Number((await db('executions').where({ id: y }).first())!['exit_code'])).toBe(3);
    });
  });
});
