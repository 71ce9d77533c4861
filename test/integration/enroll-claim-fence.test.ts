/**
 * The undo of an unconfirmed enrollment and another node's claim of the agent, interleaved by hand
 * on the server's own schema (SQLite and MariaDB), with two Fleets (node-a, node-b) on one
 * database. Node-b's upgrade has checked the agent's new secret against its memory; node-a's
 * socket that carried the welcome closes before the agent answered it, so node-a undoes the
 * enrollment. Each is one conditional statement (the undo: delete while the row carries the secret
 * and no later generation; the claim: raise the generation while the row carries the secret), so
 * whichever runs first, the agent that presented the secret on node-b keeps its enrollment: claim
 * first, the undo finds a newer generation and deletes nothing; undo first, the claim finds no row
 * (nothing is written for it) and the token the agent sent beside the secret enrolls it again with
 * that same secret. Both the batched connect (record in node-b's memory, same facts) and the
 * single connect write (record gone from node-b's memory) are covered.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { Hello } from '../../protocol/index.js';
import { EnrollmentTokens } from '../../server/auth/enrollment.js';
import { LocalBus } from '../../server/bus/bus.js';
import { AgentOwnership } from '../../server/cluster/ownership.js';
import { migrateLatest, openDb, type Db } from '../../server/db/db.js';
import { TxBatcher } from '../../server/db/tx-batcher.js';
import { Fleet, type AgentChannel, type Enrollment } from '../../server/fleet/fleet.js';
import { AgentRepo, ConnectionRepo, EnrollmentRefused } from '../../server/fleet/repo.js';
import { createMetrics } from '../../server/metrics.js';
import { cleanup, databases, dbUrlFor, tmpDir } from '../helpers/harness.js';
import { helloFor } from '../helpers/raw-agent.js';

afterAll(cleanup);

let nextLink = 1;
function channel(): AgentChannel {
  return { linkId: nextLink++, remoteAddress: '10.0.0.9', send: () => true, sendBinary: () => true, bufferedAmount: () => 0, close: () => {} };
}

function fleetOf(db: Db, node: string): Fleet {
  return new Fleet({
    repo: new AgentRepo(db),
    connections: new ConnectionRepo(db),
    bus: new LocalBus(),
    log: pino({ level: 'silent' }),
    metrics: createMetrics(),
    writes: new TxBatcher(db),
    nodeId: node,
    heartbeatIntervalMs: 5000,
    flushMs: 1000,
    // The peers only hear of claims; the fence under test is the database's.
    ownership: new AgentOwnership(db, node, { claimed: () => {}, newerElsewhere: () => false }),
  });
}

describe.each(await databases())('undo of an unconfirmed enrollment vs a claim with its secret (%s)', (kind) => {
  async function setup() {
    const { url, drop } = await dbUrlFor(kind, tmpDir('claim-fence'));
    const { db } = openDb(url, tmpDir('claim-fence-data'));
    await migrateLatest(db);
    const tokens = new EnrollmentTokens(db, { staticToken: undefined, serverUrl: () => 'http://x', updatePublicKey: undefined });
    const { token, view } = await tokens.create({ name: 'once', ttlSec: 3600, maxUses: 1, labels: { zone: 'z1' }, createdBy: 'test' });
    const grant = async (): Promise<(Enrollment & { tokenId: string | null }) | null> => {
      const g = await tokens.check(token);
      return g && g.tokenId ? { tokenId: g.tokenId, labels: g.labels, consume: tokens.consume(g.tokenId), release: tokens.release(g.tokenId) } : null;
    };
    const a = fleetOf(db, 'node-a');
    const b = fleetOf(db, 'node-b');
    const id = randomUUID();
    const hello = helloFor(id, { name: 'fenced' }) as unknown as Hello;
    const secretHash = randomUUID().replace(/-/g, '').padEnd(64, '0');
    // Node-a enrolls the agent; its welcome (with the secret) goes out and is never answered.
    const enrollment = (await grant())!;
    const chA = channel();
    const genA = await a.connect(chA, hello, secretHash, enrollment);
    expect(genA).toBe(1);
    // Node-b knows the agent (its memory is where the upgrade checked the secret).
    for (const r of await new AgentRepo(db).loadMany([id])) b.agents.set(r.id, r);
    const row = () => db('agents').where({ id }).first();
    const uses = async () => Number((await db('enrollment_tokens').where({ id: view.id }).first()).uses);
    /** Node-a's socket closes: the agent went offline there, and the enrollment is undone (true) or fenced off (false). */
    const undo = async () => {
      await a.disconnect(id, chA.linkId, 'connection lost');
      return a.abandonEnrollment(id, secretHash, enrollment, genA);
    };
    return { db, drop, a, b, id, hello, secretHash, grant, row, uses, undo, genA };
  }

  for (const path of ['batched connect (same facts)', 'single connect write (record gone from memory)'] as const) {
    it(`${path}: claim first, then the undo: the undo deletes nothing`, async () => {
      const t = await setup();
      try {
        if (path !== 'batched connect (same facts)') t.b.agents.delete(t.id);
        const genB = await t.b.connect(channel(), t.hello, t.secretHash, undefined, t.grant);
        expect(genB).toBe(t.genA + 1);
        expect(await t.undo()).toBe(false);
        const r = await t.row();
        expect(r).toMatchObject({ secret_hash: t.secretHash, owner_node: 'node-b' });
        expect(Number(r.conn_generation)).toBe(genB);
        expect(await t.uses()).toBe(1);
        expect(t.b.isOnline(t.id)).toBe(true);
      } finally {
        await t.db.destroy();
        await t.drop();
      }
    }, 60_000);

    it(`${path}: the undo first, then the claim: nothing is written for the lost claim, and the token beside the secret enrolls the agent again with that secret`, async () => {
      const t = await setup();
      try {
        if (path !== 'batched connect (same facts)') t.b.agents.delete(t.id);
        // Between node-b's check of the secret (done: its memory has the record) and its claim.
        expect(await t.undo()).toBe(true);
        expect(await t.row()).toBeUndefined();
        expect(await t.uses()).toBe(0);

        // Without the token (an agent that considers its secret confirmed): refused, nothing written.
        await expect(t.b.connect(channel(), t.hello, t.secretHash)).rejects.toBeInstanceOf(EnrollmentRefused);
        expect(await t.row()).toBeUndefined();
        expect(await t.db('agent_connections').where({ agent_id: t.id, node: 'node-b' }).first()).toBeUndefined();
        expect(t.b.isOnline(t.id)).toBe(false);

        // With it (the agent sends it until a server accepts its secret): enrolled again, same secret.
        if (path === 'batched connect (same facts)') for (const r of await new AgentRepo(t.db).loadMany([t.id])) t.b.agents.set(r.id, r);
        const before = Date.now();
        const genB = await t.b.connect(channel(), t.hello, t.secretHash, undefined, t.grant);
        const r = await t.row();
        expect(r).toMatchObject({ secret_hash: t.secretHash, owner_node: 'node-b', name: 'fenced' });
        expect(JSON.parse(r.enrol_labels)).toEqual({ zone: 'z1' });
        // Its generations start above any the undone enrollment reached: a late retry of that undo is fenced off.
        expect(genB).toBeGreaterThan(before);
        expect(Number(r.conn_generation)).toBe(genB);
        expect(await t.uses()).toBe(1);
        expect(t.b.isOnline(t.id)).toBe(true);
        expect(t.b.get(t.id)?.secretHash).toBe(t.secretHash);
        expect(t.b.enrollmentInProgress(t.id)).toBe(false);
        expect(await t.a.abandonEnrollment(t.id, t.secretHash, { labels: null }, t.genA)).toBe(false);
        expect((await t.row())?.secret_hash).toBe(t.secretHash);
      } finally {
        await t.db.destroy();
        await t.drop();
      }
    }, 60_000);
  }

  it('a lost claim in a batched group leaves the other claims of the group written', async () => {
    const t = await setup();
    try {
      // A second agent enrolled by node-a and confirmed (it reconnects on node-b in the same group).
      const other = randomUUID();
      const otherHello = helloFor(other, { name: 'other' }) as unknown as Hello;
      await t.a.connect(channel(), otherHello, 'f'.repeat(64), { labels: null });
      for (const r of await new AgentRepo(t.db).loadMany([other])) t.b.agents.set(r.id, r);
      expect(await t.undo()).toBe(true);
      const [lost, kept] = await Promise.allSettled([t.b.connect(channel(), t.hello, t.secretHash), t.b.connect(channel(), otherHello, 'f'.repeat(64))]);
      expect(lost.status).toBe('rejected');
      expect(kept.status).toBe('fulfilled');
      expect((await t.db('agents').where({ id: other }).first()).owner_node).toBe('node-b');
      expect(await t.db('agent_connections').where({ agent_id: other, node: 'node-b' }).first()).toBeDefined();
      expect(await t.db('agent_connections').where({ agent_id: t.id, node: 'node-b' }).first()).toBeUndefined();
    } finally {
      await t.db.destroy();
      await t.drop();
    }
  }, 60_000);
});
