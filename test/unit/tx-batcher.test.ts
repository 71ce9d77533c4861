import knexFactory from 'knex';
import { afterAll, describe, expect, it } from 'vitest';
import { TxBatcher } from '../../server/db/tx-batcher.js';

describe('TxBatcher (group commit)', () => {
  const db = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true, pool: { min: 1, max: 1 } });
  afterAll(() => db.destroy());

  it('runs writes queued together in one transaction, each caller getting its own result', async () => {
    await db.schema.createTable('t', (t) => {
      t.increments('id');
      t.string('k').unique();
    });
    const b = new TxBatcher(db);
    const sql: string[] = [];
    const onQuery = (q: { sql: string }) => sql.push(q.sql.toLowerCase());
    db.on('query', onQuery);
    const ids = await Promise.all(Array.from({ length: 50 }, (_, i) => b.run(async (trx) => (await trx('t').insert({ k: `k${i}` }))[0])));
    db.off('query', onQuery);
    expect(new Set(ids).size).toBe(50);
    expect(sql.filter((s) => s.startsWith('begin'))).toHaveLength(1);
    expect(sql.filter((s) => s.startsWith('insert'))).toHaveLength(50);
    expect(Number((await db('t').count({ n: '*' }))[0]!.n)).toBe(50);
  });

  it('one failing write rejects only its caller; the rest commit', async () => {
    const b = new TxBatcher(db);
    const results = await Promise.allSettled([
      b.run((trx) => trx('t').insert({ k: 'fresh-1' })),
      b.run((trx) => trx('t').insert({ k: 'k0' })), // duplicate
      b.run((trx) => trx('t').insert({ k: 'fresh-2' })),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(await db('t').whereIn('k', ['fresh-1', 'fresh-2']).count({ n: '*' })).toEqual([{ n: 2 }]);
  });

  it('splits large queues into batches of maxBatch and idle() waits for all', async () => {
    const b = new TxBatcher(db, 10);
    const all = Array.from({ length: 35 }, (_, i) => b.run((trx) => trx('t').insert({ k: `m${i}` })));
    await b.idle();
    await Promise.all(all);
    expect(await db('t').where('k', 'like', 'm%').count({ n: '*' })).toEqual([{ n: 35 }]);
  });
});
