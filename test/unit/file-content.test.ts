/**
 * Revision content in a cluster (server/files/content.ts): an upload is put in the shared store
 * under `files/<fileId>/<sha256>`; a node lacking a revision copies it once however many ask at
 * the same time, and refuses a copy whose SHA-256 is not the revision's (nothing is left behind).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SharedBlobs } from '../../server/cluster/blobs.js';
import type { DiskGuard } from '../../server/db/disk-guard.js';
import { blobOf, ContentStore } from '../../server/files/content.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const disk = { allow: () => true } as unknown as DiskGuard;
const dirs: string[] = [];
const tmp = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'content-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** An in-memory shared store; `fetches` counts copies, `corrupt` names blobs handed out altered. */
function fakeBlobs() {
  const stored = new Map<string, Buffer>();
  const state = { fetches: 0, corrupt: new Set<string>() };
  const blobs = {
    put: async (name: string, file: string) => {
      stored.set(name, fs.readFileSync(file));
    },
    fetch: async (name: string, file: string) => {
      state.fetches++;
      await new Promise((r) => setTimeout(r, 20));
      const b = stored.get(name);
      if (!b) return false;
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, state.corrupt.has(name) ? Buffer.concat([b, Buffer.from('x')]) : b);
      return true;
    },
    delete: async (name: string) => {
      stored.delete(name);
    },
  };
  return { blobs: blobs as unknown as SharedBlobs, stored, state };
}

describe('file revision content across nodes', () => {
  it('an upload is stored in the shared store; another node copies it once for concurrent readers', async () => {
    const { blobs, stored, state } = fakeBlobs();
    const b = new ContentStore(tmp(), 1 << 20, disk, 'MUSTER_FILE_MAX_BYTES', blobs);
    const c = new ContentStore(tmp(), 1 << 20, disk, 'MUSTER_FILE_MAX_BYTES', blobs);
    const bytes = Buffer.from('listen 80;\n'.repeat(1000));
    const got = await b.receive(bytes, bytes.length);
    await b.commit(got, 'f1');
    expect(stored.get(blobOf('f1', sha(bytes)))?.equals(bytes)).toBe(true);

    const paths = await Promise.all([c.ensure('f1', sha(bytes)), c.ensure('f1', sha(bytes)), c.ensure('f1', sha(bytes))]);
    expect(new Set(paths).size).toBe(1);
    expect(state.fetches).toBe(1);
    expect(fs.readFileSync(paths[0]!).equals(bytes)).toBe(true);
    // Local from now on.
    await c.ensure('f1', sha(bytes));
    expect(state.fetches).toBe(1);
  });

  it('refuses a copy whose SHA-256 is not the revision, and content no node stored; nothing is left behind', async () => {
    const { blobs, state } = fakeBlobs();
    const dirB = tmp();
    const dirC = tmp();
    const b = new ContentStore(dirB, 1 << 20, disk, 'MUSTER_FILE_MAX_BYTES', blobs);
    const c = new ContentStore(dirC, 1 << 20, disk, 'MUSTER_FILE_MAX_BYTES', blobs);
    const bytes = Buffer.from('secret=1\n');
    await b.commit(await b.receive(bytes, bytes.length), 'f2');
    state.corrupt.add(blobOf('f2', sha(bytes)));
    await expect(c.ensure('f2', sha(bytes))).rejects.toThrow(/has SHA-256 [0-9a-f]{64}, not/);
    expect(fs.existsSync(c.pathOf('f2', sha(bytes)))).toBe(false);
    expect(fs.readdirSync(path.join(dirC, 'f2'))).toEqual([]);
    // Fixed in the store: the next copy succeeds (a failed copy is not remembered).
    state.corrupt.clear();
    expect(fs.readFileSync(await c.ensure('f2', sha(bytes))).equals(bytes)).toBe(true);
    await expect(c.ensure('f2', 'a'.repeat(64))).rejects.toThrow(/in no server's store/);
  });

  it('on a single node (no shared store) a missing revision is an error naming it', async () => {
    const a = new ContentStore(tmp(), 1 << 20, disk);
    await expect(a.ensure('f3', 'b'.repeat(64))).rejects.toThrow(/missing from this server's data dir/);
  });
});
