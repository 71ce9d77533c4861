import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { migrationSource } from '../../migrations/index.js';

export type Db = Knex;
export type Dialect = 'mysql' | 'sqlite';

/** Opens the database named by `dbUrl` (mysql://… or sqlite:path) or SQLite in the data dir. */
export function openDb(dbUrl: string | undefined, dataDir: string): { db: Db; dialect: Dialect; describe: string } {
  if (dbUrl && /^(mysql|mariadb):/.test(dbUrl)) {
    const u = new URL(dbUrl.replace(/^mariadb:/, 'mysql:'));
    const db = knexFactory({
      client: 'mysql2',
      connection: {
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
      pool: { min: 0, max: 10 },
    });
    return { db, dialect: 'mysql', describe: `mysql://${u.hostname}:${u.port || 3306}${u.pathname}` };
  }
  const file = dbUrl?.startsWith('sqlite:') ? dbUrl.slice('sqlite:'.length) : path.join(dataDir, 'muster.db');
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const db = knexFactory({
    client: 'better-sqlite3',
    connection: { filename: file },
    useNullAsDefault: true,
    pool: {
      min: 1,
      max: 1,
      afterCreate: (conn: { pragma(s: string): unknown }, done: (err: Error | null, c: unknown) => void) => {
        conn.pragma('journal_mode = WAL');
        conn.pragma('synchronous = NORMAL');
        conn.pragma('foreign_keys = ON');
        conn.pragma('busy_timeout = 5000');
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

/** Rolls back every migration (used by tests and by operators downgrading). */
export async function migrateDownAll(db: Db): Promise<void> {
  await db.migrate.rollback({ migrationSource }, true);
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
