/** One aligned chunk of a content file, read once and shared by every transfer that sends it. */
export interface Chunk {
  readonly file: string;
  readonly key: string;
  /** `chunkBytes` long; the chunk's bytes are its first `len`. */
  readonly buf: Uint8Array;
  readonly len: number;
  /** Settles when `buf` holds the chunk (rejects if the read failed). */
  readonly ready: Promise<void>;
  /** References: the reads and frames using `buf`. While > 0 the buffer is never reused. */
  refs: number;
  /** Still in the cache (a chunk dropped while in use is left to the collector when released). */
  held: boolean;
}

/** Reads `len` bytes of `file` at `position` into the start of `into`. */
export type ChunkLoader = (file: string, into: Uint8Array, len: number, position: number) => Promise<void>;

/**
 * Content chunks shared by all transfers, and the buffers they live in. Content files are
 * immutable (named by their sha256), so a chunk read for one agent serves every agent that needs
 * the same (file, chunk) while it is cached: a revision sent to 1,000 hosts is read and held about
 * once instead of 1,000 times.
 *
 * Memory invariant: a buffer is reused only when no read or frame references it (frames release
 * their reference in the socket's write callback, once the bytes are in the kernel). At most
 * `maxChunks` buffers are kept; more exist only while every kept one is in use (each in-use chunk
 * backs unacknowledged bytes, which the transfer manager's budget bounds), and those extra ones
 * are dropped when released. So the bytes held for file data are about max(cache, in-flight budget),
 * whatever the number of hosts or the size of the file, and are recycled instead of left to the
 * garbage collector (10 GB of short-lived buffers made the server's RSS grow by 5× the budget).
 */
export class ChunkCache {
  /** Least recently used first. */
  private readonly chunks = new Map<string, Chunk>();
  /** Bytes read from disk, and chunk requests served from the cache. */
  bytesRead = 0;
  hits = 0;

  constructor(
    private readonly chunkBytes: number,
    private readonly maxChunks: number,
    private readonly load: ChunkLoader,
  ) {}

  /** Chunks held (in use or kept for reuse). */
  get size(): number {
    return this.chunks.size;
  }

  /** Chunk `index` of `file` (`len` bytes), with one reference the caller gives back with `release`. */
  acquire(file: string, index: number, len: number): Chunk {
    const key = `${index}:${file}`;
    const hit = this.chunks.get(key);
    if (hit) {
      this.chunks.delete(key); // most recently used goes last
      this.chunks.set(key, hit);
      hit.refs++;
      this.hits++;
      return hit;
    }
    const buf = this.take();
    const c: Chunk = {
      file,
      key,
      buf,
      len,
      refs: 1,
      held: true,
      ready: this.load(file, buf, len, index * this.chunkBytes).catch((err: unknown) => {
        // Never served again (the buffer may hold part of a read); its users get the error.
        this.forget(c);
        throw err;
      }),
    };
    this.chunks.set(key, c);
    this.bytesRead += len;
    return c;
  }

  /** Gives back one reference; an unused chunk beyond the cap is dropped. */
  release(c: Chunk): void {
    if (--c.refs > 0 || !c.held) return;
    if (this.chunks.size > this.maxChunks) this.forget(c);
  }

  /** Drops the chunks of a file no transfer sends any more (in-use ones when they are released). */
  dropFile(file: string): void {
    for (const c of [...this.chunks.values()]) if (c.file === file) this.forget(c);
  }

  /** A buffer for a new chunk: the least recently used unused chunk's when the cache is full, else a new one. */
  private take(): Uint8Array {
    if (this.chunks.size >= this.maxChunks) {
      for (const c of this.chunks.values()) {
        if (c.refs > 0) continue;
        this.forget(c);
        return c.buf;
      }
    }
    return new Uint8Array(this.chunkBytes);
  }

  private forget(c: Chunk): void {
    if (this.chunks.get(c.key) === c) this.chunks.delete(c.key);
    c.held = false;
  }
}
