import type { Knex } from 'knex';
import { queryTimeout } from './db.js';

/** A better-sqlite3 statement, as far as the hot write paths use it. */
export interface SqliteStatement {
  run(...params: unknown[]): unknown;
  /** The first row a statement returns (a SELECT, or a write with RETURNING). */
  get(...params: unknown[]): unknown;
}
interface SqliteConnection {
  prepare(sql: string): SqliteStatement;
  /** better-sqlite3: whether a transaction is open on the connection. */
  readonly inTransaction: boolean;
}

/** Statements prepared on each SQLite connection, by SQL text (a handful per write path). */
const cache = new WeakMap<SqliteConnection, Map<string, SqliteStatement>>();
const MAX_CACHED = 64;

/**
 * On SQLite: a function that returns the statement for `sql`, prepared once on the connection
 * `trx` runs on and reused; null on MySQL. For hot writes of many rows (an execution row per
 * result, an output chunk): a cached statement run per row costs a few microseconds, while each
 * knex query is compiled, prepared and run anew (≈ 60–120 µs a row in multi-row statements).
 * Values must be SQLite-bindable: booleans as 0/1 (see sqliteValue).
 */
export async function sqlitePrepared(trx: Knex.Transaction): Promise<((sql: string) => SqliteStatement) | null> {
  if (!isSqlite(trx)) return null;
  const conn = await (trx.client as { acquireConnection(): Promise<SqliteConnection> }).acquireConnection();
  return statementsOf(conn);
}

/**
 * On SQLite: runs `fn` in a transaction of its own on the pool's one connection, with that
 * connection's cached statements (see sqlitePrepared), and returns what it returned; null on
 * MySQL. `fn` is synchronous (better-sqlite3 is): BEGIN, its statements and COMMIT run while this
 * holds the connection, so no knex query or transaction can interleave. A throw rolls the
 * transaction back and rejects. For a hot write that stands alone: a knex transaction costs
 * ≈ 0.5 ms of CPU to set up and commit (its transactor objects, promise chains, compiled BEGIN and
 * COMMIT), five times what SQLite itself spends on the commit.
 */
export async function sqliteTransaction<T>(db: Knex, fn: (prepared: (sql: string) => SqliteStatement) => T): Promise<{ value: T } | null> {
  if (!isSqlite(db)) return null;
  const client = db.client as { acquireConnection(): Promise<SqliteConnection>; releaseConnection(c: SqliteConnection): Promise<void> };
  const conn = await client.acquireConnection();
  try {
    const prepared = statementsOf(conn);
    prepared('BEGIN IMMEDIATE').run();
    let value: T;
    try {
      value = fn(prepared);
      prepared('COMMIT').run();
    } catch (err) {
      // A failed COMMIT may have ended the transaction already (SQLite rolls back on some errors).
      if (conn.inTransaction) prepared('ROLLBACK').run();
      throw err;
    }
    return { value };
  } finally {
    await client.releaseConnection(conn);
  }
}

/** A mysql2 connection, as far as mysqlPrepared uses it. */
interface MysqlConnection {
  execute(o: { sql: string; timeout?: number }, values: unknown[], cb: (err: Error | null) => void): void;
  destroy(): void;
}

/**
 * On MySQL/MariaDB: a function that runs `sql` as a prepared statement on the connection `trx` runs
 * on (mysql2 prepares each distinct text once per connection and keeps it), with the same
 * statement timeout as every knex query; null on SQLite. Values travel in the binary protocol as
 * they are (bytes as bytes, no escaping into SQL text). Callers keep the number of distinct texts
 * small (row counts from a fixed set): the server's max_prepared_stmt_count is shared by every
 * connection of every node.
 */
export async function mysqlPrepared(trx: Knex.Transaction): Promise<((sql: string, values: unknown[]) => Promise<void>) | null> {
  if (isSqlite(trx)) return null;
  const conn = await (trx.client as { acquireConnection(): Promise<MysqlConnection> }).acquireConnection();
  const timeout = queryTimeout(trx) || undefined;
  return (sql, values) =>
    new Promise<void>((resolve, reject) =>
      conn.execute({ sql, timeout }, values, (err) => {
        if (!err) return resolve();
        // Timed out mid-command: the connection cannot be reused (see db.ts).
        if ((err as { code?: string }).code === 'PROTOCOL_SEQUENCE_TIMEOUT') conn.destroy();
        reject(err);
      }),
    );
}

function isSqlite(db: Knex): boolean {
  return (db.client as { driverName?: string }).driverName === 'better-sqlite3';
}

/** The statement cache of one connection. */
function statementsOf(conn: SqliteConnection): (sql: string) => SqliteStatement {
  let m = cache.get(conn);
  if (!m) cache.set(conn, (m = new Map()));
  const stmts = m;
  return (sql) => {
    let s = stmts.get(sql);
    if (!s) {
      if (stmts.size >= MAX_CACHED) stmts.clear();
      stmts.set(sql, (s = conn.prepare(sql)));
    }
    return s;
  };
}

/** A value as better-sqlite3 binds it (it refuses booleans; knex turns them into 0/1 too). */
export function sqliteValue(v: unknown): unknown {
  return typeof v === 'boolean' ? Number(v) : v;
}
