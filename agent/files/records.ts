import fs from 'node:fs';
import path from 'node:path';

/** What the agent applied for one managed file, and what it saw on disk right after. */
export interface FileRecord {
  fileId: string;
  revision: number;
  path: string;
  sha256: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  ino: number;
  /** Where the content it replaced was kept (for a manual or later rollback), if there was any. */
  previous: string | null;
}

/**
 * The agent's record of the files it manages (stateDir/files/records.json), written atomically
 * (temp file, fsync, rename) so a crash leaves the old or the new record, never half of one.
 */
export class FileRecords {
  readonly dir: string;
  private readonly file: string;
  private readonly records = new Map<string, FileRecord>();

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'files');
    this.file = path.join(this.dir, 'records.json');
    try {
      const list = JSON.parse(fs.readFileSync(this.file, 'utf8')) as FileRecord[];
      for (const r of list) this.records.set(r.fileId, r);
    } catch {
      /* none yet */
    }
  }

  all(): FileRecord[] {
    return [...this.records.values()];
  }

  get(fileId: string): FileRecord | undefined {
    return this.records.get(fileId);
  }

  set(r: FileRecord): void {
    this.records.set(r.fileId, r);
    this.save();
  }

  delete(fileId: string): void {
    const r = this.records.get(fileId);
    if (!r) return;
    this.records.delete(fileId);
    if (r.previous) fs.rmSync(r.previous, { force: true });
    this.save();
  }

  /** Where the content a new revision replaces is kept. */
  previousPath(fileId: string): string {
    return path.join(this.dir, `${fileId}.previous`);
  }

  private save(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(this.all()));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }
}
