/**
 * Issue 9, defect 6: secrets readable by local users. The data dir is 0700 and every file under it
 * 0600 (database, WAL, artifacts, recordings), also what an older version left world-readable;
 * the enrollment token is never on a command line (see enrollment.test.ts for the local agent).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Api, cleanup, startServer, tmpDir } from '../helpers/harness.js';

afterAll(cleanup);
const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);

describe('secrets at rest', () => {
  it('data dir 0700; database, WAL, artifacts and recordings 0600', async () => {
    const dataDir = path.join(tmpDir('secrets'), 'data');
    // What an older version (or a umask of 022) left behind.
    fs.mkdirSync(path.join(dataDir, 'recordings'), { recursive: true, mode: 0o755 });
    fs.chmodSync(dataDir, 0o755);
    fs.writeFileSync(path.join(dataDir, 'recordings', 'old.cast'), '{}\n', { mode: 0o644 });
    fs.chmodSync(path.join(dataDir, 'recordings', 'old.cast'), 0o644);
    const s = await startServer({ dataDir });
    const api = await Api.login(s.url);

    const pkgDir = tmpDir('pkg');
    fs.writeFileSync(path.join(pkgDir, 'VERSION'), '9.9.9\n');
    const file = path.join(tmpDir('pkgout'), 'p.tar.gz');
    execFileSync('tar', ['-czf', file, '-C', pkgDir, './VERSION']);
    const up = await api.req(
      'POST',
      `/api/artifacts?version=9.9.9&signature=${encodeURIComponent(Buffer.alloc(64, 1).toString('base64'))}`,
      new Uint8Array(fs.readFileSync(file)),
      { 'content-type': 'application/octet-stream' },
    );
    expect(up.status).toBe(201);

    expect(mode(dataDir)).toBe('700');
    for (const f of ['muster.db', 'muster.db-wal', 'muster.db-shm']) {
      if (fs.existsSync(path.join(dataDir, f))) expect(mode(path.join(dataDir, f)), f).toBe('600');
    }
    expect(fs.existsSync(path.join(dataDir, 'muster.db'))).toBe(true);
    expect(mode(path.join(dataDir, 'artifacts'))).toBe('700');
    expect(mode(path.join(dataDir, 'artifacts', `${up.body.id}.tar.gz`))).toBe('600');
    expect(mode(path.join(dataDir, 'recordings'))).toBe('700');
    expect(mode(path.join(dataDir, 'recordings', 'old.cast'))).toBe('600');
    await s.stop();
  });
});
