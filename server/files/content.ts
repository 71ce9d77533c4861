import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { SharedBlobs } from '../cluster/blobs.js';
import type { DiskGuard } from '../db/disk-guard.js';
import { ApiError } from '../http/errors.js';

/** An upload written to a temporary file, hashed on the way. */
export interface Received {
  tmp: string;
  sha256: string;
  size: number;
}

/** Name of a revision's content in the cluster's shared object store. */
export const blobOf = (fileId: string, sha256: string) => `files/${fileId}/${sha256}`;

/**
 * Revision content on disk: dataDir/files/<fileId>/<sha256>. Content-addressed per file, so a
 * revision that repeats an earlier one's bytes shares its file, and a finished upload is moved
 * into place before its row exists (a row never names missing content).
 *
 * In a cluster (issue 12) nodes share no disk: an upload is also stored in the NATS object store
 * `<cluster>-blobs` as `files/<fileId>/<sha256>` (server/cluster/blobs.ts) before its row exists,
 * and a node that needs a revision it lacks (to stream it to an agent, to serve its bytes) copies
 * it into its data dir first (`ensure`: streamed, one copy at a time per revision, its SHA-256
 * checked against the name before it is moved into place).
 */
export class ContentStore {
  /** `limitName`: the setting named when a body is too large. */
  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly disk: DiskGuard,
    private readonly limitName = 'MUSTER_FILE_MAX_BYTES',
    private readonly blobs: SharedBlobs | null = null,
  ) {}

  /** Copies from the shared store under way, by content path. */
  private readonly fetching = new Map<string, Promise<string>>();

  pathOf(fileId: string, sha256: string): string {
    return path.join(this.dir, fileId, sha256);
  }

  /**
   * Streams `body` to a temporary file chunk by chunk (never whole in memory), refusing past
   * `maxBytes` (413) or when the data disk is short (507). The caller commits or discards it.
   */
  async receive(body: Readable | Buffer, declaredLength: number | null): Promise<Received> {
    const limit = this.maxBytes;
    const tooLarge = () => new ApiError('payload_too_large', `file content larger than ${limit} bytes (${this.limitName})`, 413, { limit });
    if (declaredLength != null && declaredLength > limit) throw tooLarge();
    if (declaredLength != null && !this.disk.allow(declaredLength)) throw new ApiError('insufficient_storage', 'the server data disk is full');
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.${randomUUID()}.upload`);
    const hash = createHash('sha256');
    let size = 0;
    const disk = this.disk;
    try {
      const source = Buffer.isBuffer(body) ? [body] : body;
      await pipeline(
        source,
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            size += chunk.length;
            if (size > limit) return cb(tooLarge());
            if (declaredLength == null && !disk.allow(chunk.length)) return cb(new ApiError('insufficient_storage', 'the server data disk is full'));
            hash.update(chunk);
            cb(null, chunk);
          },
        }),
        fs.createWriteStream(tmp, { mode: 0o600 }),
      );
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    return { tmp, sha256: hash.digest('hex'), size };
  }

  /**
   * Moves a received upload into place (idempotent: the same bytes are already there) and, in a
   * cluster, stores it where every node reads it; refused (503) when the shared store fails, so a
   * revision row never names content other nodes cannot get.
   */
  async commit(r: Received, fileId: string): Promise<string> {
    const dest = this.pathOf(fileId, r.sha256);
    fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o700 });
    fs.renameSync(r.tmp, dest);
    if (this.blobs) {
      await this.blobs.put(blobOf(fileId, r.sha256), dest).catch((err: unknown) => {
        throw new ApiError('unavailable', `could not store the revision where every server node reads it (NATS object store): ${(err as Error).message}`);
      });
    }
    return dest;
  }

  /**
   * The path of a revision's content on this node, copied from the shared store first if this node
   * lacks it (one copy at a time per revision, whoever asks). Rejects when no node stored it or
   * the copy's SHA-256 is not the revision's.
   */
  async ensure(fileId: string, sha256: string): Promise<string> {
    const dest = this.pathOf(fileId, sha256);
    if (fs.existsSync(dest)) return dest;
    const blobs = this.blobs;
    if (!blobs) throw new Error(`revision content ${sha256} is missing from this server's data dir`);
    let p = this.fetching.get(dest);
    if (!p) {
      p = (async () => {
        const tmp = `${dest}.${randomUUID()}.fetch`;
        try {
          if (!(await blobs.fetch(blobOf(fileId, sha256), tmp))) throw new Error(`revision content ${sha256} is in no server's store (NATS object store)`);
          const got = await hashOf(tmp);
          if (got !== sha256) throw new Error(`revision content copied from the shared store has SHA-256 ${got}, not ${sha256}`);
          fs.renameSync(tmp, dest);
          return dest;
        } finally {
          fs.rmSync(tmp, { force: true });
        }
      })().finally(() => this.fetching.delete(dest));
      this.fetching.set(dest, p);
    }
    return p;
  }

  discard(r: Received): void {
    fs.rmSync(r.tmp, { force: true });
  }

  /** Removes a file's content once nothing refers to it any more. */
  removeAll(fileId: string): void {
    fs.rmSync(path.join(this.dir, fileId), { recursive: true, force: true });
  }
}

async function hashOf(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
