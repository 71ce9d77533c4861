/**
 * The batched connect writes (a reconnect storm's claims and connection rows) on the server's own
 * schema, SQLite and MariaDB: every caller gets its own connection row and a generation one above
 * the stored one (two sockets of one agent in the same group get two), the whole group is written
 * in one transaction with a handful of statements, and a group that fails commits nothing and
 * rejects every caller. On SQLite the group's own transaction waits for the connection while a knex
 * transaction holds it.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { migrateLatest, openDb, type Db } from '../../server/db/db.js';
import { TxBatcher } from '../../server/db/tx-batcher.js';
import { ConnectWrites } from '../../server/fleet/connect-writes.js';
import { cleanup, databases, dbUrlFor, tmpDir } from '../helpers/harness.js';

afterAll(cleanup);

const N = 2500;

async function seed(db: Db, n: number): Promise<void> {
  const rows = Array.from({ length: n }, (_, i) => ({
    id: `a-${i}`,
    name: `a-${i}`,
    hostname: `h-${i}`,
    ips: '[]',
    platform: 'linux',
    arch: 'x64',
    os: 'Linux',
    version: '1',
    labels: '{}',
    groups: '[]',
    secret_hash: 'x'.repeat(64),
    created_at: 1,
    conn_generation: i % 3,
  }));
  for (let i = 0; i < rows.length; i += 200) await db('agents').insert(rows.slice(i, i + 200));
}

describe.each(await databases())('ConnectWrites on %s', (kind) => {
  it('writes a storm of connects in a few statements, each with its own row and generation', async () => {
    const { url, drop } = await dbUrlFor(kind, tmpDir('connect-writes'));
    const { db } = openDb(url, tmpDir('connect-writes-data'));
    try {
      await migrateLatest(db);
      await seed(db, N);
      const writes = new ConnectWrites(new TxBatcher(db), 'node-a', true);
      const statements: string[] = [];
      const onQuery = (q: { sql: string }) => statements.push(q.sql.trim().split(/\s+/)[0]!.toLowerCase());
      db.on('query', onQuery);
      // Every agent once, and a-7 twice more (a second and a third socket racing the first).
      const ids = [...Array.from({ length: N }, (_, i) => `a-${i}`), 'a-7', 'a-7'];
      const opened = await Promise.all(ids.map((id, i) => writes.open(id, 1000 + i, `10.0.0.${i % 250}`)));
      db.off('query', onQuery);

      const rows = (await db('agent_connections').select('id', 'agent_id', 'connected_at', 'remote_address', 'node')) as Array<{
        id: number | string;
        agent_id: string;
        connected_at: number | string;
        remote_address: string;
        node: string;
      }>;
      expect(rows).toHaveLength(ids.length);
      const byId = new Map(rows.map((r) => [Number(r.id), r]));
      opened.forEach((o, i) => {
        const r = byId.get(o.connectionId);
        expect(r, `row of caller ${i}`).toBeDefined();
        expect(r!.agent_id).toBe(ids[i]);
        expect(Number(r!.connected_at)).toBe(1000 + i);
        expect(r!.remote_address).toBe(`10.0.0.${i % 250}`);
        expect(r!.node).toBe('node-a');
      });
      expect(new Set(opened.map((o) => o.connectionId)).size).toBe(ids.length);
      // Generations: one above the seeded value, and a-7's three sockets got three successive ones.
      for (let i = 0; i < N; i++) if (i !== 7) expect(opened[i]!.generation).toBe((i % 3) + 1);
      expect([opened[7]!.generation, opened[N]!.generation, opened[N + 1]!.generation].sort()).toEqual([2, 3, 4]);
      const stored = (await db('agents').select('id', 'owner_node', 'conn_generation')) as Array<{ id: string; owner_node: string; conn_generation: number }>;
      expect(stored.every((r) => r.owner_node === 'node-a')).toBe(true);
      expect(Number(stored.find((r) => r.id === 'a-7')!.conn_generation)).toBe(4);
      // SQLite: one statement per write, prepared once, in a transaction of its own on the
      // connection (knex runs nothing: no knex transaction per group); MariaDB: three statements
      // per 1,000 agents, not three per agent.
      if (kind === 'mysql') {
        expect(statements.filter((s) => s === 'begin' || s === 'begin;' || s === 'start').length).toBeLessThanOrEqual(2);
        expect(statements.length).toBeLessThan(40);
      } else expect(statements).toEqual([]);

      // A group that fails (the agent_connections table is gone) commits nothing, and every caller hears of it.
      await db.schema.renameTable('agent_connections', 'agent_connections_away');
      const failed = await Promise.allSettled(['a-1', 'a-2', 'a-3'].map((id) => writes.open(id, 5000, null)));
      expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
      expect(Number((await db('agents').where({ id: 'a-1' }).first('conn_generation'))!.conn_generation)).toBe(2);
      await db.schema.renameTable('agent_connections_away', 'agent_connections');
      // And the next group works again.
      const again = await writes.open('a-1', 6000, null);
      expect(again.generation).toBe(3);

      // Gathering: an isolated connect is written at once (the window here is a minute); connects
      // arriving while the last group is that recent wait to share one write, until the group is
      // full or idle() asks for it.
      const gathered = new ConnectWrites(new TxBatcher(db), 'node-a', true, { gatherMs: 60_000, maxGroup: 4 });
      await gathered.open('a-10', 7000, null);
      expect(gathered.groups).toBe(1);
      const turn = () => new Promise((r) => setImmediate(r));
      const storm: Promise<unknown>[] = [];
      for (const id of ['a-11', 'a-12', 'a-13']) {
        storm.push(gathered.open(id, 7001, null));
        await turn();
        await turn();
      }
      expect(gathered.groups).toBe(1);
      storm.push(gathered.open('a-14', 7002, null));
      expect(gathered.groups).toBe(2);
      expect(new Set((await Promise.all(storm)).map((o) => (o as { connectionId: number }).connectionId)).size).toBe(4);
      const late = gathered.open('a-15', 7003, null);
      await turn();
      expect(gathered.groups).toBe(2);
      await gathered.idle();
      expect(gathered.groups).toBe(3);
      expect((await late).generation).toBe((15 % 3) + 2);
    } finally {
      await db.destroy();
      await drop();
    }
  }, 120_000);
});

describe('ConnectWrites on sqlite, next to knex transactions', () => {
  it('waits for a knex transaction holding the connection, then writes everything queued meanwhile as one group', async () => {
    const { db } = openDb(undefined, tmpDir('connect-writes-busy'));
    try {
      await migrateLatest(db);
      await seed(db, 10);
      const writes = new ConnectWrites(new TxBatcher(db), 'node-a', true);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let inside!: () => void;
      const entered = new Promise<void>((r) => (inside = r));
      // A knex transaction that writes, then waits (as one awaiting a slow step would).
      const trx = db.transaction(async (t) => {
        await t('agents').where({ id: 'a-0' }).update({ name: 'renamed' });
        inside();
        await held;
        await t('agents').where({ id: 'a-0' }).update({ conn_generation: 10 });
      });
      await entered;
      const order: string[] = [];
      const first = writes.open('a-0', 1, null).then((o) => (order.push('open a-0'), o));
      await new Promise((r) => setTimeout(r, 20));
      // Queued while the first group waits for the connection: joins that group.
      const second = writes.open('a-1', 2, null).then((o) => (order.push('open a-1'), o));
      await new Promise((r) => setTimeout(r, 20));
      expect(order).toEqual([]);
      release();
      await trx;
      order.push('knex committed');
      const [o0, o1] = await Promise.all([first, second]);
      // The knex transaction committed whole before the group wrote (its generation 10, then + 1).
      expect(o0.generation).toBe(11);
      expect(o1.generation).toBe(2);
      expect((await db('agents').where({ id: 'a-0' }).first('name'))!.name).toBe('renamed');
      expect(await db('agent_connections').count({ n: '*' }).first()).toEqual({ n: 2 });
    } finally {
      await db.destroy();
    }
  });
});
