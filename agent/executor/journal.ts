import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from '../state.js';

/**
 * On-disk journal of every execution id this agent has accepted (one id per line, fsynced before
 * the script starts). A repeated exec.run for an id in the journal is never run again, even after
 * an agent restart. Compacted to the newest `keep` ids when it grows past twice that.
 */
export class Journal {
  private readonly ids = new Set<string>();
  private readonly file: string;
  private fd: number;

  constructor(
    stateDir: string,
    /** execJournalKeep (MUSTER_AGENT_EXEC_JOURNAL_KEEP). */
    private readonly keep: number,
  ) {
    this.file = path.join(stateDir, 'exec-journal');
    if (fs.existsSync(this.file)) {
      for (const line of fs.readFileSync(this.file, 'utf8').split('\n')) if (line) this.ids.add(line);
    }
    this.fd = fs.openSync(this.file, 'a', 0o600);
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Records `id` durably; returns false when it was already there. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    fs.writeSync(this.fd, `${id}\n`);
    fs.fsyncSync(this.fd);
    if (this.ids.size > this.keep * 2) this.compact();
    return true;
  }

  private compact(): void {
    const newest = [...this.ids].slice(-this.keep);
    this.ids.clear();
    for (const id of newest) this.ids.add(id);
    fs.closeSync(this.fd);
    writeAtomic(this.file, newest.map((id) => `${id}\n`).join(''), 0o600);
    this.fd = fs.openSync(this.file, 'a', 0o600);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}
