import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from '../../migrations/index.js';
import { tighten } from './data-dir.js';

export type Db = Knex;
export type Dialect = 'mysql' | 'sqlite';

/** Timeouts that bound every wait on the database (see the config of the same names). */
export interface DbTimeouts {
  connectTimeoutMs: number;
  acquireTimeoutMs: number;
}
/** knex's and mysql2's own defaults. */
const DEFAULT_TIMEOUTS: DbTimeouts = { connectTimeoutMs: 10_000, acquireTimeoutMs: 60_000 };

type MysqlConn = { destroy(): void };
type QueryObj = { sql?: string; options?: Record<string, unknown> };
type KnexClientClass = new (config: Knex.Config) => { _query(conn: MysqlConn, obj: QueryObj): Promise<unknown> };
/** Held by the client class, not the instance: knex's transaction clients share the prototype but not instance fields. */
interface Timeouts {
  queryTimeoutMs: number;
}

/**
 * knex's mysql2 client with a statement timeout. A partitioned database answers nothing, and a
 * statement sent on an established connection would otherwise wait for as long as TCP takes to
 * give up (many minutes), holding its pooled connection. A statement that times out leaves its
 * connection mid-command (later commands would queue behind it forever), so that connection is
 * destroyed and the pool opens a new one. The timeout is off (0) until `setQueryTimeout` (the
 * migrations may legitimately run long).
 */
function mysqlClient(): KnexClientClass {
  const Base = createRequire(import.meta.url)('knex/lib/dialects/mysql2/index.js') as KnexClientClass;
  const timeouts: Timeouts = { queryTimeoutMs: 0 };
  return class TimedMysql2 extends Base {
    static timeouts = timeouts;
    override async _query(conn: MysqlConn, obj: QueryObj): Promise<unknown> {
      if (timeouts.queryTimeoutMs > 0 && obj && typeof obj === 'object') obj.options = { timeout: timeouts.queryTimeoutMs, ...obj.options };
      try {
        return await super._query(conn, obj);
      } catch (err) {
        if ((err as { code?: string }).code === 'PROTOCOL_SEQUENCE_TIMEOUT') conn.destroy();
        throw err;
      }
    }
  };
}

function timeoutsOf(db: Db): Timeouts | undefined {
  return (db.client.constructor as { timeouts?: Timeouts }).timeouts;
}

/** Sets the statement timeout of a MySQL/MariaDB database (no effect on SQLite, which has no network to wait on). */
export function setQueryTimeout(db: Db, ms: number): void {
  const t = timeoutsOf(db);
  if (t) t.queryTimeoutMs = ms;
}

/** The statement timeout now in force (0: none). */
export function queryTimeout(db: Db | Knex.Transaction): number {
  return timeoutsOf(db as Db)?.queryTimeoutMs ?? 0;
}

/**
 * SQLite's automatic checkpoint, pages of WAL (SQLite's default is 1,000). A checkpoint copies the
 * newest version of every page in the WAL into the database file and syncs both, inside the COMMIT
 * that crossed the threshold, on the event loop. A reconnect storm commits a group every few
 * milliseconds and each agent dirties its own pages (≈ 4 WAL frames per agent): at 1,000 pages a
 * 19,850-agent storm checkpointed ≈ 80 times, each copying pages the next group rewrites. At 10,000
 * pages (≈ 40 MB of WAL at most) a page rewritten by several groups is copied once, and there are
 * a tenth as many sync pairs (measured on a copy of a 19,850-agent database, its connect writes in
 * groups of 7: 42–44 against 49–55 µs of CPU per agent, 1.04–1.09 against 1.34–1.53 s of wall
 * time, the longest COMMIT 41–45 ms; bench/RESULTS.md, Presence, session 13).
 */
export const SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000;
/**
 * SQLite's page cache of the server's connection, KiB (SQLite's own default; better-sqlite3 builds
 * with 16 MiB). The database file is in the kernel's page cache anyway, so a larger cache keeps a
 * second copy of every page the server touched, in its RSS: a fleet's presence and connect writes
 * touch every agent's row, so at 16 MiB a 19,850-agent database (15 MB) was held whole. A page not
 * held costs a read from the kernel's cache (on a copy of that database: the CPU of 19,850 connect
 * writes and of the presence flush's updates unchanged within the noise, RSS 5–8 MB lower).
 */
export const SQLITE_CACHE_KIB = 2000;

/** Opens the database named by `dbUrl` (mysql://… or sqlite:path) or SQLite in the data dir. */
export function openDb(dbUrl: string | undefined, dataDir: string, t: DbTimeouts = DEFAULT_TIMEOUTS): { db: Db; dialect: Dialect; describe: string } {
  if (dbUrl && /^(mysql|mariadb):/.test(dbUrl)) {
    const u = new URL(dbUrl.replace(/^mariadb:/, 'mysql:'));
    const db = knexFactory({
      client: mysqlClient() as unknown as typeof Knex.Client,
      connection: {
        connectTimeout: t.connectTimeoutMs,
        host: u.hostname,
        port: Number(u.port || 3306),
        user: decodeURIComponent(u.username),
        password: decodeURIComponent(u.password),
        database: u.pathname.replace(/^\//, ''),
        charset: 'utf8mb4',
        supportBigNumbers: true,
        bigNumberStrings: false,
        // BLOBs come back as Buffer; JSON lives in TEXT columns we parse ourselves.
      },
      // A query waits at most acquireTimeoutMs for a connection, including the time to open one.
      pool: { min: 0, max: 10, acquireTimeoutMillis: t.acquireTimeoutMs, createTimeoutMillis: t.acquireTimeoutMs },
      acquireConnectionTimeout: t.acquireTimeoutMs,
    });
    return { db, dialect: 'mysql', describe: `mysql://${u.hostname}:${u.port || 3306}${u.pathname}` };
  }
  const file = dbUrl?.startsWith('sqlite:') ? dbUrl.slice('sqlite:'.length) : path.join(dataDir, 'muster.db');
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true, mode: 0o700 });
  // The database and its WAL hold password and secret hashes: owner only, wherever the file is.
  for (const f of [file, `${file}-wal`, `${file}-shm`]) tighten(f, 0o600);
  const db = knexFactory({
    client: 'better-sqlite3',
    connection: { filename: file },
    useNullAsDefault: true,
    // SQLite has no network to wait on: its one connection is only ever busy with our own writes,
    // so it keeps knex's default acquire timeout.
    pool: {
      min: 1,
      max: 1,
      afterCreate: (conn: { pragma(s: string): unknown }, done: (err: Error | null, c: unknown) => void) => {
        conn.pragma('journal_mode = WAL');
        conn.pragma('synchronous = NORMAL');
        conn.pragma('foreign_keys = ON');
        conn.pragma('busy_timeout = 5000');
        conn.pragma(`wal_autocheckpoint = ${SQLITE_WAL_AUTOCHECKPOINT_PAGES}`);
        conn.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
        done(null, conn);
      },
    },
  });
  return { db, dialect: 'sqlite', describe: `sqlite:${file}` };
}

/** Runs every pending migration. */
export async function migrateLatest(db: Db): Promise<void> {
  await db.migrate.latest({ migrationSource });
}

/** MySQL TEXT columns for JSON: parse defensively (a bad row must not crash a list). */
export function parseJson<T>(s: unknown, fallback: T): T {
  if (typeof s !== 'string') return fallback;
  try {
    return JSON.parse(s) as T;
  } catch {
    return fallback;
  }
}
