import knexFactory from 'knex';
import { afterAll, describe, expect, it } from 'vitest';
import { isLockConflict, retryOnConflict } from '../../server/db/retry.js';
import { TxBatcher } from '../../server/db/tx-batcher.js';

const deadlock = () =>
  Object.assign(new Error('Deadlock found when trying to get lock; try restarting transaction'), { code: 'ER_LOCK_DEADLOCK', errno: 1213 });
const lockWait = () => Object.assign(new Error('Lock wait timeout exceeded'), { code: 'ER_LOCK_WAIT_TIMEOUT', errno: 1205 });

describe('retryOnConflict (lock conflicts run the transaction again)', () => {
  it('recognizes deadlocks and lock wait timeouts by code, errno or cause, and nothing else', () => {
    expect(isLockConflict(deadlock())).toBe(true);
    expect(isLockConflict(lockWait())).toBe(true);
    expect(isLockConflict({ errno: 1213 })).toBe(true);
    expect(isLockConflict(new Error('wrapped', { cause: deadlock() }))).toBe(true);
    expect(isLockConflict(Object.assign(new Error('dup'), { code: 'ER_DUP_ENTRY', errno: 1062 }))).toBe(false);
    expect(isLockConflict(Object.assign(new Error('gone'), { code: 'PROTOCOL_CONNECTION_LOST' }))).toBe(false);
    expect(isLockConflict(null)).toBe(false);
  });

  it('retries a conflict with jittered, doubling pauses and returns the attempt that succeeds', async () => {
    const sleeps: number[] = [];
    let n = 0;
    const v = await retryOnConflict(
      async () => {
        if (n++ < 3) throw n === 2 ? lockWait() : deadlock();
        return 'stored';
      },
      { retries: 5, backoffMs: 100 },
      { sleep: async (ms) => void sleeps.push(ms), random: () => 0.5 },
    );
    expect(v).toBe('stored');
    expect(n).toBe(4);
    expect(sleeps).toEqual([50, 100, 200]);
  });

  it('gives up after the configured retries with the conflict, and never retries other errors', async () => {
    let n = 0;
    await expect(
      retryOnConflict(
        async () => {
          n++;
          throw deadlock();
        },
        { retries: 2, backoffMs: 1 },
        { sleep: async () => {} },
      ),
    ).rejects.toMatchObject({ code: 'ER_LOCK_DEADLOCK' });
    expect(n).toBe(3);
    n = 0;
    await expect(
      retryOnConflict(
        async () => {
          n++;
          throw new Error('constraint');
        },
        { retries: 5, backoffMs: 1 },
        { sleep: async () => {} },
      ),
    ).rejects.toThrow('constraint');
    expect(n).toBe(1);
  });
});

describe('TxBatcher and lock conflicts', () => {
  const db = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true, pool: { min: 1, max: 1 } });
  afterAll(() => db.destroy());

  it('a conflict in one op runs the whole batch again: the ops before it are stored, not reported stored and rolled back', async () => {
    await db.schema.createTable('r', (t) => {
      t.string('k').primary();
    });
    const b = new TxBatcher(db, 1000, { sleep: async () => {} });
    let thrown = 0;
    const results = await Promise.allSettled([
      b.run((trx) => trx('r').insert({ k: 'before' }), 'a'),
      b.run(async (trx) => {
        // The fake conflict: the database rolled the transaction back (here: the batch's own rollback).
        if (thrown++ === 0) throw deadlock();
        return trx('r').insert({ k: 'conflicted' });
      }, 'b'),
      b.run((trx) => trx('r').insert({ k: 'after' }), 'c'),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(b.conflictRetries).toBe(1);
    expect((await db('r').select('k').orderBy('k')).map((r) => r.k)).toEqual(['after', 'before', 'conflicted']);
  });

  it('rejects every op of the batch once the retries are exhausted, and stores none of them', async () => {
    const b = new TxBatcher(db, 1000, { sleep: async () => {} });
    const results = await Promise.allSettled([
      b.run((trx) => trx('r').insert({ k: 'lost-1' })),
      b.run(async () => {
        throw deadlock();
      }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(b.conflictRetries).toBe(5);
    expect(await db('r').where('k', 'lost-1').count({ n: '*' })).toEqual([{ n: 0 }]);
  });

  it('runs the ops of a batch in key order (one lock order on every node), ops of one key in queue order', async () => {
    const b = new TxBatcher(db);
    const order: string[] = [];
    const op = (name: string) => async () => void order.push(name);
    await Promise.all([b.run(op('c1'), 'c'), b.run(op('a1'), 'a'), b.run(op('c2'), 'c'), b.run(op('b1'), 'b'), b.run(op('a2'), 'a')]);
    expect(order).toEqual(['a1', 'a2', 'b1', 'c1', 'c2']);
  });
});
