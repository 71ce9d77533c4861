import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** The agent's persistent identity in its state dir: a stable id and, once enrolled, its secret (0600). */
export class AgentState {
  readonly agentId: string;
  private secret: string | null;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const idFile = path.join(dir, 'agent-id');
    if (fs.existsSync(idFile)) {
      this.agentId = fs.readFileSync(idFile, 'utf8').trim();
    } else {
      this.agentId = randomUUID();
      writeAtomic(idFile, `${this.agentId}\n`, 0o644);
    }
    const secretFile = path.join(dir, 'agent-secret');
    this.secret = fs.existsSync(secretFile) ? fs.readFileSync(secretFile, 'utf8').trim() || null : null;
  }

  getSecret(): string | null {
    return this.secret;
  }

  /** Stores the secret received at enrollment; never logged, never sent again. */
  saveSecret(secret: string): void {
    writeAtomic(path.join(this.dir, 'agent-secret'), `${secret}\n`, 0o600);
    this.secret = secret;
  }
}

/** Writes a file via a temp file + rename so a crash never leaves it half written. */
export function writeAtomic(file: string, data: string | Uint8Array, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}
