/**
 * Real deadlocks on MariaDB (several nodes writing the same agents): two transactions that lock two
 * rows in opposite orders, forced to meet; InnoDB aborts one of them (ER_LOCK_DEADLOCK) and rolls it
 * back whole. Both must end stored: the aborted one runs again (server/db/retry.ts), and a group
 * commit (TxBatcher) runs its whole batch again, so an op queued before the one that met the
 * deadlock is not reported stored while it was rolled back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb, type Db } from '../../server/db/db.js';
import { transaction } from '../../server/db/retry.js';
import { TxBatcher } from '../../server/db/tx-batcher.js';
import { cleanup, createMysqlDatabase, mysqlAvailable, tmpDir } from '../helpers/harness.js';

afterAll(cleanup);

/** Resolves once `n` parties have arrived (the first arrival of each party only). */
function barrier(n: number): () => Promise<void> {
  let arrived = 0;
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return () => {
    if (++arrived >= n) open();
    return opened;
  };
}

describe.runIf(await mysqlAvailable())('lock conflicts on MariaDB', () => {
  let a: Db;
  let b: Db;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const d = await createMysqlDatabase();
    drop = d.drop;
    // Two pools, as two server nodes have.
    a = openDb(d.url, tmpDir('deadlock')).db;
    b = openDb(d.url, tmpDir('deadlock')).db;
    await a.schema.createTable('rows', (t) => {
      t.string('id', 16).primary();
      t.integer('n').notNullable();
    });
    await a.schema.createTable('log', (t) => {
      t.increments('id');
      t.string('what', 32);
    });
    await a.schema.createTable('pad', (t) => {
      t.increments('id');
      t.string('what', 32);
    });
  });
  afterAll(async () => {
    await a?.destroy();
    await b?.destroy();
    await drop?.();
  });

  async function reset() {
    await a('rows').del();
    await a('rows').insert([
      { id: 'x', n: 0 },
      { id: 'y', n: 0 },
    ]);
    await a('log').del();
  }
  const bump = (trx: Db, id: string) => trx('rows').where({ id }).increment('n', 1);
  const first = () => {
    let once = true;
    return () => {
      const r = once;
      once = false;
      return r;
    };
  };

  it('two transactions forced into a deadlock are both stored', async () => {
    await reset();
    const meet = barrier(2);
    const firstA = first();
    const firstB = first();
    let attempts = 0;
    await Promise.all([
      transaction(a, async (trx) => {
        attempts++;
        await bump(trx, 'x');
        if (firstA()) await meet();
        await bump(trx, 'y');
      }),
      transaction(b, async (trx) => {
        attempts++;
        await bump(trx, 'y');
        if (firstB()) await meet();
        await bump(trx, 'x');
      }),
    ]);
    // One of them met the deadlock and ran again.
    expect(attempts).toBe(3);
    expect(await a('rows').orderBy('id').select('id', 'n')).toEqual([
      { id: 'x', n: 2 },
      { id: 'y', n: 2 },
    ]);
  });

  it('a batch that meets a deadlock runs again whole: the op before it is stored once, every op resolved', async () => {
    await reset();
    const batcher = new TxBatcher(a);
    await a('pad').del();
    const meet = barrier(2);
    const firstA = first();
    const firstB = first();
    // InnoDB rolls back the transaction that changed fewer rows: the other side changes more, so
    // the victim is the batch (either way both must end stored exactly once).
    const other = transaction(b, async (trx) => {
      await trx('pad').insert(Array.from({ length: 20 }, () => ({ what: 'pad' })));
      await bump(trx, 'y');
      if (firstB()) await meet();
      await bump(trx, 'x');
      await trx('log').insert({ what: 'other' });
    });
    const batched = Promise.all([
      batcher.run((trx) => trx('log').insert({ what: 'before' }), 'a'),
      batcher.run(async (trx) => {
        await bump(trx, 'x');
        if (firstA()) await meet();
        await bump(trx, 'y');
        await trx('log').insert({ what: 'crossing' });
      }, 'b'),
    ]);
    await Promise.all([other, batched]);
    expect(batcher.conflictRetries).toBe(1);
    expect((await a('log').select('what')).map((r) => r.what).sort()).toEqual(['before', 'crossing', 'other']);
    expect(await a('rows').orderBy('id').select('id', 'n')).toEqual([
      { id: 'x', n: 2 },
      { id: 'y', n: 2 },
    ]);
  });
});
