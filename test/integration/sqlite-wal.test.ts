/**
 * The server's SQLite connection (server/db/db.ts): its automatic checkpoint lets the WAL grow to
 * SQLITE_WAL_AUTOCHECKPOINT_PAGES before copying it into the database (a reconnect storm's groups
 * rewrite the same pages: copied once, with a tenth of the syncs of SQLite's default 1,000), and
 * stays bounded by it; its page cache is SQLITE_CACHE_KIB (not a second copy of the whole file).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDb, SQLITE_CACHE_KIB, SQLITE_WAL_AUTOCHECKPOINT_PAGES } from '../../server/db/db.js';
import { cleanup, tmpDir } from '../helpers/harness.js';

afterAll(cleanup);

const PAGE = 4096;
const walBytes = (file: string) => (fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0);

describe('SQLite connection', () => {
  it('checkpoints every SQLITE_WAL_AUTOCHECKPOINT_PAGES of WAL, not every 1,000', async () => {
    const dir = tmpDir('sqlite-wal');
    const file = path.join(dir, 'muster.db');
    const { db } = openDb(undefined, dir);
    try {
      await db.raw('CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)');
      const blob = Buffer.alloc(PAGE - 200, 7); // one row a page
      let maxWal = 0;
      // 1.5× the threshold, in commits of 500 pages.
      const commits = Math.ceil((1.5 * SQLITE_WAL_AUTOCHECKPOINT_PAGES) / 500);
      for (let c = 0; c < commits; c++) {
        await db.transaction(async (trx) => {
          for (let i = 0; i < 500; i++) await trx.raw('INSERT INTO t (v) VALUES (?)', [blob]);
        });
        maxWal = Math.max(maxWal, walBytes(file));
      }
      // SQLite's default would have restarted the WAL after ≈ 1,000 pages (≈ 4–6 MB at most).
      expect(maxWal).toBeGreaterThan(0.9 * SQLITE_WAL_AUTOCHECKPOINT_PAGES * PAGE);
      // And it did checkpoint: the WAL never held much more than the threshold and a commit.
      expect(maxWal).toBeLessThan((SQLITE_WAL_AUTOCHECKPOINT_PAGES + 1200) * PAGE);
      const rows = (await db.raw('PRAGMA cache_size')) as Array<{ cache_size: number }>;
      expect(rows[0]?.cache_size).toBe(-SQLITE_CACHE_KIB);
    } finally {
      await db.destroy();
    }
  });
});
