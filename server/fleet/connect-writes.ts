import type { Knex } from 'knex';
import { sqliteTransaction, type SqliteStatement } from '../db/prepared.js';
import type { TxBatcher } from '../db/tx-batcher.js';
import { ClaimLost } from './repo.js';

/** What registering one connection wrote: its agent_connections row and the generation it claimed. */
export interface OpenedConnection {
  connectionId: number;
  /** agents.conn_generation after this connection's claim (0 when ownership is not recorded). */
  generation: number;
}

interface PendingOpen {
  agentId: string;
  /** The secret the socket presented: the claim holds only while the agent's row still carries it. */
  secretHash: string | undefined;
  at: number;
  remoteAddress: string | null;
  resolve(v: OpenedConnection): void;
  reject(e: unknown): void;
}

/** Resolves a caller with its connection, or rejects it with ClaimLost when its claim found no row with its secret. */
function settle(p: PendingOpen, o: OpenedConnection | null): void {
  if (o) p.resolve(o);
  else p.reject(new ClaimLost(p.agentId));
}

/** How connects are gathered into one write (MUSTER_CONNECT_WRITE_GATHER_MS, MUSTER_CONNECT_WRITE_GROUP_MAX). */
export interface GatherOptions {
  /** While connects keep arriving, how long one waits for others to join its group (ms); 0: never waits. */
  gatherMs: number;
  /** A group this large is written at once, without waiting out `gatherMs`. */
  maxGroup: number;
}
export const DEFAULT_GATHER: GatherOptions = { gatherMs: 20, maxGroup: 500 };

/** Rows per multi-row statement on MySQL/MariaDB (far under max_allowed_packet: ~100 bytes a row). */
const MYSQL_CHUNK = 1000;

/**
 * The writes of a known agent reconnecting with unchanged facts (the whole of a reconnect storm):
 * its ownership claim (agents.owner_node, conn_generation + 1) and its agent_connections row.
 * Connects are written in groups (an isolated one in the next turn of the event loop; in a storm,
 * those of the last `gatherMs` together, see schedule()), each group by one operation: on SQLite a transaction of its own on
 * the connection, with statements prepared once (no knex compile, no prepare per agent, and no
 * knex transaction: that costs five times SQLite's own commit, and a storm writes a group every
 * few milliseconds); on MySQL/MariaDB an operation of the next group commit, with one UPDATE, one
 * SELECT and one multi-row INSERT per 1,000 agents instead of three round trips per agent. All of
 * one group or none of it commits (its own transaction, or a savepoint), and the callers learn
 * their row only once the transaction has committed.
 *
 * Order against the group commit's other writes of the same agents (a disconnect's release of its
 * claim, its connection row's close) does not matter: those are keyed by connection id and
 * generation, and on MySQL this operation already runs first in its batch.
 */
export class ConnectWrites {
  private pending: PendingOpen[] = [];
  /** MySQL: whether a multi-row insert's ids are consecutive from insertId (asked once). */
  private consecutiveIds: Promise<boolean> | null = null;
  /** The groups handed to the database and not yet committed. */
  private inFlight = new Set<Promise<void>>();
  /** The wait of the group being gathered (a timer while connects arrive in a storm, else the next turn). */
  private gathering: { cancel(): void } | null = null;
  /** When the last group was handed to the database (connects arriving closer than `gatherMs` mean a storm). */
  private lastGroupAt = -Infinity;
  /** Groups handed to the database so far (for tests and benchmarks). */
  groups = 0;

  constructor(
    private readonly writes: TxBatcher,
    private readonly nodeId: string,
    /** Record ownership (agents.owner_node / conn_generation); false only in unit tests without it. */
    private readonly claimOwnership: boolean,
    private readonly gather: GatherOptions = DEFAULT_GATHER,
  ) {}

  /**
   * Claims the agent for this node and opens its connection row, in the next group. With
   * `secretHash`, only while the agent's row carries that secret: otherwise (its enrollment was
   * undone since the upgrade checked the secret) nothing is written for it and this rejects with
   * ClaimLost (the rest of the group commits).
   */
  open(agentId: string, at: number, remoteAddress: string | null, secretHash?: string): Promise<OpenedConnection> {
    return new Promise<OpenedConnection>((resolve, reject) => {
      this.pending.push({ agentId, secretHash, at, remoteAddress, resolve, reject });
      // The first one queued schedules the group; it takes everything queued until it is written.
      if (this.pending.length === 1) this.schedule();
      else if (this.pending.length >= this.gather.maxGroup) this.writeNow();
    });
  }

  /** Resolves once every connect queued so far is written (or failed); the group commit's own are its idle(). */
  async idle(): Promise<void> {
    if (this.pending.length) this.writeNow();
    while (this.inFlight.size) await Promise.all(this.inFlight);
  }

  /** The next group, in agent-id order (the lock order of every other writer of agents rows). */
  private take(): PendingOpen[] {
    const group = this.pending.sort((a, b) => (a.agentId < b.agentId ? -1 : a.agentId > b.agentId ? 1 : 0));
    this.pending = [];
    return group;
  }

  /**
   * An isolated connect is written in the next turn of the event loop (with whatever else that turn
   * queued). While connects keep arriving (the last group went less than `gatherMs` ago: a reconnect
   * storm), the group gathers for `gatherMs` first: each commit costs the same whether it carries
   * one connect or fifty (SQLite's WAL pages and its write calls, MySQL's log flush), and a storm
   * bounded by the node's CPU returns sooner with fewer of them.
   */
  private schedule(): void {
    this.gathering?.cancel();
    const storm = Date.now() - this.lastGroupAt < this.gather.gatherMs;
    if (storm) {
      const t = setTimeout(() => this.writeNow(), this.gather.gatherMs);
      this.gathering = { cancel: () => clearTimeout(t) };
    } else {
      const t = setImmediate(() => this.writeNow());
      this.gathering = { cancel: () => clearImmediate(t) };
    }
  }

  /** Hands what is queued to the database now, as one group (its wait is over, it is full, or idle() asks). */
  private writeNow(): void {
    this.gathering?.cancel();
    this.gathering = null;
    if (!this.pending.length) return;
    const group = this.take();
    this.lastGroupAt = Date.now();
    this.groups++;
    let done: Promise<void>;
    try {
      done = (this.writes.db.client as { driverName?: string }).driverName === 'better-sqlite3' ? this.writeSqliteGroup(group) : this.writeMysqlGroup(group);
    } catch (err) {
      // Runs from a timer: a throw here would reach no caller; the group's connects hear of it.
      for (const p of group) p.reject(err);
      return;
    }
    const tracked = done.finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /** One operation of the next group commit (which may run it again, with the same group, after a lock conflict). */
  private writeMysqlGroup(group: PendingOpen[]): Promise<void> {
    return this.writes
      .run((trx) => trx.transaction((sp) => this.writeMysql(sp, group)))
      .then(
        (opened) => group.forEach((p, i) => settle(p, opened[i] ?? null)),
        (err: unknown) => {
          for (const p of group) p.reject(err);
        },
      );
  }

  private async writeSqliteGroup(group: PendingOpen[]): Promise<void> {
    try {
      const opened = await sqliteTransaction(this.writes.db, (prepared) => this.writeSqlite(prepared, group));
      if (!opened) throw new Error('ConnectWrites: not an SQLite database');
      group.forEach((p, i) => settle(p, opened.value[i] ?? null));
    } catch (err) {
      // Nothing of the group committed: its connects fail now (their agents retry).
      for (const p of group) p.reject(err);
    }
  }

  private writeSqlite(prepared: (sql: string) => SqliteStatement, group: PendingOpen[]): Array<OpenedConnection | null> {
    const claim = this.claimOwnership
      ? prepared('UPDATE agents SET owner_node = ?, conn_generation = conn_generation + 1 WHERE id = ? RETURNING conn_generation')
      : null;
    const claimWith = this.claimOwnership
      ? prepared('UPDATE agents SET owner_node = ?, conn_generation = conn_generation + 1 WHERE id = ? AND secret_hash = ? RETURNING conn_generation')
      : null;
    const insert = prepared('INSERT INTO agent_connections (agent_id, connected_at, remote_address, node) VALUES (?, ?, ?, ?)');
    return group.map((p) => {
      const row = (p.secretHash === undefined ? claim?.get(this.nodeId, p.agentId) : claimWith?.get(this.nodeId, p.agentId, p.secretHash)) as
        { conn_generation: number | bigint } | undefined;
      // The row no longer carries the secret (the enrollment was undone): nothing written for it.
      if (claimWith && p.secretHash !== undefined && row === undefined) return null;
      const res = insert.run(p.agentId, p.at, p.remoteAddress, this.nodeId) as { lastInsertRowid: number | bigint };
      return { connectionId: Number(res.lastInsertRowid), generation: Number(row?.conn_generation ?? 0) };
    });
  }

  private async writeMysql(trx: Knex.Transaction, group: PendingOpen[]): Promise<Array<OpenedConnection | null>> {
    const out = new Array<OpenedConnection | null>(group.length);
    // Two sockets of one agent in the same group each need their own generation: rounds of distinct ids.
    let rest = group.map((p, i) => ({ p, i }));
    while (rest.length) {
      const seen = new Set<string>();
      const round: typeof rest = [];
      const later: typeof rest = [];
      for (const e of rest) {
        if (seen.has(e.p.agentId)) later.push(e);
        else {
          seen.add(e.p.agentId);
          round.push(e);
        }
      }
      for (let k = 0; k < round.length; k += MYSQL_CHUNK) await this.writeMysqlChunk(trx, round.slice(k, k + MYSQL_CHUNK), out);
      rest = later;
    }
    return out;
  }

  private async writeMysqlChunk(trx: Knex.Transaction, all: Array<{ p: PendingOpen; i: number }>, out: Array<OpenedConnection | null>): Promise<void> {
    const ids = all.map((e) => e.p.agentId);
    const marks = ids.map(() => '?').join(',');
    const generations = new Map<string, number>();
    let chunk = all;
    if (this.claimOwnership) {
      // Each claim holds only while the row carries the secret its socket presented. One statement
      // for the chunk: `secret_hash IN (every presented hash)` (a row matching another agent's
      // random 256-bit secret does not happen), and the exact pair is checked on the rows read back.
      const hashes = all.every((e) => e.p.secretHash !== undefined) ? all.map((e) => e.p.secretHash!) : null;
      const bySecret = hashes ? ` AND secret_hash IN (${marks})` : '';
      await trx.raw(`UPDATE agents SET owner_node = ?, conn_generation = conn_generation + 1 WHERE id IN (${marks})${bySecret}`, [
        this.nodeId,
        ...ids,
        ...(hashes ?? []),
      ]);
      const [rows] = (await trx.raw(`SELECT id, conn_generation, secret_hash FROM agents WHERE id IN (${marks})`, ids)) as [
        Array<{ id: string; conn_generation: number | string; secret_hash: string }>,
      ];
      const secrets = new Map<string, string>();
      for (const r of rows) {
        generations.set(r.id, Number(r.conn_generation));
        secrets.set(r.id, r.secret_hash);
      }
      // The enrollment was undone (or the id enrolled anew with another secret): nothing written for it.
      chunk = all.filter((e) => {
        const lost = e.p.secretHash !== undefined && secrets.get(e.p.agentId) !== e.p.secretHash;
        if (lost) out[e.i] = null;
        return !lost;
      });
      if (!chunk.length) return;
    }
    const insert = 'INSERT INTO agent_connections (agent_id, connected_at, remote_address, node) VALUES ';
    const values = (e: { p: PendingOpen }) => [e.p.agentId, e.p.at, e.p.remoteAddress, this.nodeId];
    if (await this.mysqlConsecutiveIds(trx)) {
      const [res] = (await trx.raw(insert + chunk.map(() => '(?, ?, ?, ?)').join(','), chunk.flatMap(values))) as [{ insertId: number }];
      chunk.forEach((e, k) => (out[e.i] = { connectionId: Number(res.insertId) + k, generation: generations.get(e.p.agentId) ?? 0 }));
      return;
    }
    for (const e of chunk) {
      const [res] = (await trx.raw(`${insert}(?, ?, ?, ?)`, values(e))) as [{ insertId: number }];
      out[e.i] = { connectionId: Number(res.insertId), generation: generations.get(e.p.agentId) ?? 0 };
    }
  }

  /**
   * InnoDB gives a multi-row insert of known size consecutive ids unless its auto-increment lock
   * mode is 2 (interleaved) or the increment is not 1 (Galera and multi-primary setups): then one
   * insert per row.
   */
  private mysqlConsecutiveIds(trx: Knex.Transaction): Promise<boolean> {
    this.consecutiveIds ??= trx
      .raw('SELECT @@innodb_autoinc_lock_mode AS mode, @@auto_increment_increment AS inc')
      .then((r: [Array<{ mode: number | string; inc: number | string }>]) => {
        const row = r[0][0];
        return row !== undefined && Number(row.mode) < 2 && Number(row.inc) === 1;
      });
    // A failed question is asked again next time (the group fails with it and is retried by its agents).
    this.consecutiveIds.catch(() => (this.consecutiveIds = null));
    return this.consecutiveIds;
  }
}
