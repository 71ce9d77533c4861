import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { DiskGuard } from '../db/disk-guard.js';
import { ApiError } from '../http/errors.js';

/** An upload written to a temporary file, hashed on the way. */
export interface Received {
  tmp: string;
  sha256: string;
  size: number;
}

/**
 * Revision content on disk: dataDir/files/<fileId>/<sha256>. Content-addressed per file, so a
 * revision that repeats an earlier one's bytes shares its file, and a finished upload is moved
 * into place before its row exists (a row never names missing content).
 */
export class ContentStore {
  /** `limitName`: the setting named when a body is too large. */
  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly disk: DiskGuard,
    private readonly limitName = 'MUSTER_FILE_MAX_BYTES',
  ) {}

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

  /** Moves a received upload into place (idempotent: the same bytes are already there). */
  commit(r: Received, fileId: string): string {
    const dest = this.pathOf(fileId, r.sha256);
    fs.mkdirSync(path.dirname(dest), { recursive: true, mode: 0o700 });
    fs.renameSync(r.tmp, dest);
    return dest;
  }

  discard(r: Received): void {
    fs.rmSync(r.tmp, { force: true });
  }

  /** Removes a file's content once nothing refers to it any more. */
  removeAll(fileId: string): void {
    fs.rmSync(path.join(this.dir, fileId), { recursive: true, force: true });
  }
}
