import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { ObjectStore } from 'nats';

/**
 * Content every server node must be able to read though nodes share no disk (issue 12): agent
 * packages and file revisions. Kept in the NATS JetStream object store `<cluster>-blobs` (chunked by NATS, never
 * held whole in memory here): a node stores a file it received; a node asked for content it lacks
 * copies it into its own data dir first (a cache: later reads are local) and checks NATS' digest.
 * On a single node there is no shared store (`null` in the cluster): the data dir is the store.
 */
export class SharedBlobs {
  constructor(private readonly os: ObjectStore) {}

  /** Stores a local file under `name` (replacing any). */
  async put(name: string, file: string): Promise<void> {
    const rs = Readable.toWeb(fs.createReadStream(file)) as unknown as ReadableStream<Uint8Array>;
    await this.os.put({ name }, rs);
  }

  /** Copies `name` into `file` (through a temporary file beside it); false when it is not stored. */
  async fetch(name: string, file: string): Promise<boolean> {
    const r = await this.os.get(name);
    if (!r) return false;
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.fetch`);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    try {
      await pipeline(Readable.fromWeb(r.data as unknown as WebReadableStream<Uint8Array>), fs.createWriteStream(tmp, { mode: 0o600 }));
      const err = await r.error;
      if (err) throw err;
      fs.renameSync(tmp, file);
      return true;
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }

  async delete(name: string): Promise<void> {
    await this.os.delete(name).catch(() => {});
  }
}
