import type { Knex } from 'knex';

/** A better-sqlite3 statement, as far as the hot write paths use it. */
export interface SqliteStatement {
  run(...params: unknown[]): unknown;
  /** The first row a statement returns (a SELECT, or a write with RETURNING). */
  get(...params: unknown[]): unknown;
}
interface SqliteConnection {
  prepare(sql: string): SqliteStatement;
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
  if ((trx.client as { driverName?: string }).driverName !== 'better-sqlite3') return null;
  const conn = await (trx.client as { acquireConnection(): Promise<SqliteConnection> }).acquireConnection();
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
