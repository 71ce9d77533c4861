import fs from 'node:fs';
import path from 'node:path';

/**
 * Makes the data dir private to the server's user: the dir 0700, every file under it 0600, every
 * directory 0700. The database, its WAL, artifacts and terminal recordings (everything a shell
 * printed) hold secrets; new files get these modes from the umask set at start (077), and this
 * pass tightens what an older version left world-readable. Symlinks are left alone.
 */
export function secureDataDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const walk = (d: string) => {
    tighten(d, 0o700);
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) tighten(p, 0o600);
    }
  };
  walk(dir);
}

/** chmod `file` to `mode` if it exists and is looser (group/other bits set). */
export function tighten(file: string, mode: number): void {
  try {
    const st = fs.lstatSync(file);
    if (!st.isSymbolicLink() && (st.mode & 0o077) !== 0) fs.chmodSync(file, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
