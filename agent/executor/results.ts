import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Stream } from '../../protocol/index.js';

/** A finished execution's result and the output the agent still holds for it, as journaled. */
export interface SavedResult {
  executionId: string;
  taskId: string;
  status: 'succeeded' | 'failed' | 'timeout' | 'cancelled';
  exitCode: number | null;
  signal: string | null;
  startedAt: number;
  finishedAt: number;
  error?: string | undefined;
  /** Why the agent itself ended it (e.g. `agent stopping`). */
  reason?: string | undefined;
  truncated: boolean;
  /** Output chunks produced in all (the next sequence number). */
  seq: number;
  /** The newest chunks, in order (older ones were sent and dropped to stay within the buffer). */
  chunks: Array<{ seq: number; stream: Stream; data: Buffer }>;
}

interface Header extends Omit<SavedResult, 'chunks'> {
  v: 1;
  /** [seq, 1 stdout | 2 stderr, byte length] per chunk; the bytes follow the header line. */
  chunks: Array<[number, 1 | 2, number]>;
}

/**
 * On-disk journal of finished results the server has not acknowledged yet, one file each in
 * `<stateDir>/exec-results/`: a JSON header line, then the chunks' raw bytes. Written to a temp
 * file, fsync'd, renamed, and the directory fsync'd, so after a crash a result is there whole or
 * not at all; removed when the server acks. An agent restarted in between reports them again.
 */
export class ResultStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'exec-results');
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(executionId: string): string {
    // Ids come from the server: hashed, so no id can name a path.
    return path.join(this.dir, `${createHash('sha256').update(executionId).digest('hex').slice(0, 40)}.result`);
  }

  /** Stores `r` durably (throws on I/O errors such as a full disk; nothing half-written stays). */
  save(r: SavedResult): void {
    const { chunks, ...rest } = r;
    const header: Header = { v: 1, ...rest, chunks: chunks.map((c) => [c.seq, c.stream === 'stdout' ? 1 : 2, c.data.length]) };
    const file = this.file(r.executionId);
    const tmp = `${file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, `${JSON.stringify(header)}\n`);
      for (const c of chunks) fs.writeSync(fd, c.data);
      fs.fsyncSync(fd);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    fs.closeSync(fd);
    fs.renameSync(tmp, file);
    syncDir(this.dir);
  }

  remove(executionId: string): void {
    fs.rmSync(this.file(executionId), { force: true });
  }

  /** Every stored result; unreadable files are reported through `bad` and removed. */
  loadAll(bad: (file: string, why: string) => void): SavedResult[] {
    const out: SavedResult[] = [];
    for (const name of fs.readdirSync(this.dir)) {
      const file = path.join(this.dir, name);
      if (!name.endsWith('.result')) {
        // A temp file of a save the agent did not finish: the result was not journaled.
        fs.rmSync(file, { force: true });
        continue;
      }
      try {
        out.push(parse(fs.readFileSync(file)));
      } catch (err) {
        bad(file, (err as Error).message);
        fs.rmSync(file, { force: true });
      }
    }
    return out.sort((a, b) => a.finishedAt - b.finishedAt);
  }
}

function parse(buf: Buffer): SavedResult {
  const nl = buf.indexOf(10);
  if (nl < 0) throw new Error('no header');
  const h = JSON.parse(buf.subarray(0, nl).toString('utf8')) as Header;
  if (h.v !== 1 || typeof h.executionId !== 'string' || !Array.isArray(h.chunks)) throw new Error('not a result file');
  let off = nl + 1;
  const chunks = h.chunks.map(([seq, s, len]) => {
    if (off + len > buf.length) throw new Error('output shorter than its header says');
    const data = buf.subarray(off, off + len);
    off += len;
    return { seq, stream: (s === 1 ? 'stdout' : 'stderr') as Stream, data };
  });
  return { ...h, chunks };
}

/** fsync of a directory, so a rename in it survives a power loss. */
function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
