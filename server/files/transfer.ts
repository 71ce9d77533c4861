import fs from 'node:fs/promises';
import { fileDataHeader, type SendOpts } from '../../protocol/index.js';
import { ChunkCache } from './chunks.js';

/**
 * What the manager needs from the fleet: one binary message to one agent, given in parts (sent as
 * its fragments); `opts.done` is called once the socket is done with the buffers, only if this answers true.
 */
export interface TransferSink {
  sendBinary(agentId: string, parts: readonly Uint8Array[], opts?: SendOpts): boolean;
}

interface Transfer {
  id: string;
  agentId: string;
  file: string;
  size: number;
  /** Bytes put on the socket, and bytes the agent says it has written. */
  sent: number;
  acked: number;
  reading: boolean;
  started: boolean;
  ended: boolean;
  lastProgressAt: number;
}

interface Handle {
  fh: Promise<fs.FileHandle>;
  refs: number;
  reads: number;
}

export interface TransferLimits {
  /** Payload bytes per FILE_DATA frame. */
  chunkBytes: number;
  /** Unacknowledged bytes one transfer may have on the way. */
  windowBytes: number;
  /** Unacknowledged bytes all transfers together may have on the way (bounds server memory whatever the fleet size). */
  maxInflightBytes: number;
  /** Content chunks kept for the next transfers that need them (default: the in-flight budget). */
  cacheBytes?: number;
}

/**
 * Streams revision content to agents from disk with credit-based flow control. Invariant: a chunk
 * is read from disk only when both its transfer's window (sent − acked ≤ windowBytes) and the
 * global budget (Σ sent − acked ≤ maxInflightBytes) have room for it, so the bytes held anywhere
 * between the disk and the agents' disks (frame buffers, the socket's userland queue, kernel
 * buffers, the agent's memory) never exceed maxInflightBytes — however many agents receive at once. Transfers that find the budget spent wait in `blocked` and are served in
 * turn as acks give budget back. One file handle per content file is shared by all its transfers
 * (positional reads), and chunks are read once into shared, recycled buffers (chunks.ts): each
 * frame is the transfer's small header plus a view of the shared chunk, sent as two fragments of
 * one WebSocket message, so no per-agent copy of the content is ever made.
 */
export class TransferManager {
  private readonly transfers = new Map<string, Transfer>();
  private readonly handles = new Map<string, Handle>();
  private readonly blocked = new Set<Transfer>();
  private inflight = 0;
  private readonly chunks: ChunkCache;
  /** Total bytes sent (exposed for metrics and benchmarks). */
  bytesSent = 0;

  constructor(
    private readonly sink: TransferSink,
    private readonly limits: TransferLimits,
    private readonly onError: (err: unknown, transferId: string) => void,
  ) {
    const maxChunks = Math.max(1, Math.floor((limits.cacheBytes ?? limits.maxInflightBytes) / limits.chunkBytes));
    this.chunks = new ChunkCache(limits.chunkBytes, maxChunks, (file, into, len, position) => this.read(file, into, 0, len, position));
  }

  /** Content bytes read from disk (the rest of bytesSent came from shared chunks). */
  get bytesRead(): number {
    return this.chunks.bytesRead;
  }

  /** Registers a transfer; nothing is sent until the agent's first `file.ack`. */
  add(id: string, agentId: string, file: string, size: number): void {
    this.transfers.set(id, { id, agentId, file, size, sent: 0, acked: 0, reading: false, started: false, ended: false, lastProgressAt: Date.now() });
  }

  holds(agentId: string, id: string): boolean {
    return this.transfers.get(id)?.agentId === agentId;
  }

  /** When the transfer last moved (registered or acked). */
  lastProgress(id: string): number | null {
    return this.transfers.get(id)?.lastProgressAt ?? null;
  }

  get inflightBytes(): number {
    return this.inflight;
  }

  get active(): number {
    return this.transfers.size;
  }

  /** The agent has written every byte below `offset`. A restart from 0 (it reopened its temp file) is allowed. */
  ack(agentId: string, id: string, offset: number): void {
    const t = this.transfers.get(id);
    if (!t || t.agentId !== agentId || t.ended) return;
    if (offset > t.sent || offset > t.size) return; // acks only what was sent
    if (!t.started) {
      t.started = true;
      this.openHandle(t.file);
    }
    if (offset < t.acked) {
      // Start over from `offset`: what was on the way past it is dropped by the agent.
      this.inflight -= t.sent - t.acked;
      t.sent = offset;
      t.acked = offset;
    } else {
      this.inflight -= offset - t.acked;
      t.acked = offset;
    }
    t.lastProgressAt = Date.now();
    this.pump(t);
    this.drainBlocked();
  }

  /** Forgets a transfer (result received, agent gone, cancelled) and gives its budget back. */
  end(id: string): void {
    const t = this.transfers.get(id);
    if (!t) return;
    t.ended = true;
    this.transfers.delete(id);
    this.blocked.delete(t);
    this.inflight -= t.sent - t.acked;
    if (t.started) this.closeHandle(t.file);
    this.drainBlocked();
  }

  /** Ends every transfer of an agent (its socket closed). */
  endAgent(agentId: string): string[] {
    const ids = [...this.transfers.values()].filter((t) => t.agentId === agentId).map((t) => t.id);
    for (const id of ids) this.end(id);
    return ids;
  }

  async close(): Promise<void> {
    for (const id of [...this.transfers.keys()]) this.end(id);
  }

  /**
   * Serves waiting transfers in the order they blocked, while the next one's frame fits the budget.
   * It stops at the first that does not fit (first come, first served; and an ack costs O(1), not a
   * pass over every waiting transfer: at 1,000 hosts that pass, re-inserting each into the set, was
   * most of the server's garbage).
   */
  private drainBlocked(): void {
    for (const t of this.blocked) {
      if (!this.fits(this.nextLen(t))) return;
      this.blocked.delete(t);
      this.pump(t);
    }
  }

  /** Bytes of the transfer's next frame (0: nothing to send now). */
  private nextLen(t: Transfer): number {
    if (t.ended || t.reading || t.sent >= t.size) return 0;
    const room = this.limits.windowBytes - (t.sent - t.acked);
    if (room <= 0) return 0; // the next ack pumps again
    // Chunks are aligned to chunkBytes (so transfers at the same place share them); a frame is the
    // rest of the current chunk, or what the window leaves of it.
    const chunkBytes = this.limits.chunkBytes;
    const index = Math.floor(t.sent / chunkBytes);
    return Math.min(Math.min(chunkBytes, t.size - index * chunkBytes) - (t.sent - index * chunkBytes), room);
  }

  /** Within the budget (one frame may go alone even if it is larger, or nothing would ever move). */
  private fits(len: number): boolean {
    return this.inflight + len <= this.limits.maxInflightBytes || this.inflight === 0;
  }

  /** Sends the next chunk if the window and the budget allow; continues after the read. */
  private pump(t: Transfer): void {
    const len = this.nextLen(t);
    if (len === 0) return;
    if (!this.fits(len)) {
      this.blocked.add(t);
      return;
    }
    this.blocked.delete(t); // it may have been acked while waiting
    const chunkBytes = this.limits.chunkBytes;
    const index = Math.floor(t.sent / chunkBytes);
    const at = t.sent - index * chunkBytes;
    const chunkLen = Math.min(chunkBytes, t.size - index * chunkBytes);
    const offset = t.sent;
    // Counted before the read: concurrent pumps of other transfers see the budget taken.
    t.sent += len;
    this.inflight += len;
    t.reading = true;
    const c = this.chunks.acquire(t.file, index, chunkLen);
    c.ready.then(
      () => {
        t.reading = false;
        if (t.ended || t.sent !== offset + len) {
          // Ended, or restarted meanwhile: this frame is stale.
          this.chunks.release(c);
          return this.pump(t);
        }
        this.bytesSent += len;
        // Bulk: keystrokes and control messages to this agent go ahead of file data. The chunk's
        // reference passes to the frame and comes back when the socket has written it.
        const sent = this.sink.sendBinary(t.agentId, [fileDataHeader(t.id, offset), c.buf.subarray(at, at + len)], {
          bulk: true,
          key: t.id,
          done: () => this.chunks.release(c),
        });
        if (!sent) return this.chunks.release(c); // socket gone: the disconnect ends it
        this.pump(t);
      },
      (err: unknown) => {
        t.reading = false;
        this.chunks.release(c);
        this.onError(err, t.id);
      },
    );
  }

  private async read(file: string, frame: Uint8Array, at: number, len: number, position: number): Promise<void> {
    const h = this.handles.get(file)!;
    h.reads++;
    try {
      const fh = await h.fh;
      let done = 0;
      while (done < len) {
        const { bytesRead } = await fh.read(frame, at + done, len - done, position + done);
        if (bytesRead === 0) throw new Error('content file is shorter than its revision says');
        done += bytesRead;
      }
    } finally {
      h.reads--;
      this.maybeClose(h);
    }
  }

  private openHandle(file: string): void {
    const h = this.handles.get(file);
    if (h) {
      h.refs++;
      return;
    }
    const fh = fs.open(file, 'r');
    fh.catch(() => {});
    this.handles.set(file, { fh, refs: 1, reads: 0 });
  }

  private closeHandle(file: string): void {
    const h = this.handles.get(file);
    if (!h || --h.refs > 0) return;
    h.refs = 0;
    this.handles.delete(file);
    this.chunks.dropFile(file); // no transfer sends this content any more
    this.maybeClose(h);
  }

  /** Closes a handle no transfer uses once its last read has settled. */
  private maybeClose(h: Handle): void {
    if (h.refs !== 0 || h.reads > 0) return;
    h.refs = -1; // closed once
    void h.fh.then(
      (fh) => fh.close().catch(() => {}),
      () => {},
    );
  }
}
