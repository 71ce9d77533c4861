import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/** The agent's persistent identity in its state dir: a stable id and, once enrolled, its secret (0600). */
export class AgentState {
  readonly agentId: string;
  private secret: string | null;
  /**
   * The secret came in a welcome and no server has accepted it since: the server may not know the
   * agent heard it (it undoes an enrollment whose agent never spoke after that welcome), so until
   * then the agent also presents its enrollment token (see AgentConnection).
   */
  private unconfirmed: boolean;

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
    this.unconfirmed = this.secret !== null && fs.existsSync(path.join(dir, UNCONFIRMED));
  }

  getSecret(): string | null {
    return this.secret;
  }

  /** Whether the stored secret is one no server has accepted yet (see `unconfirmed`). */
  secretUnconfirmed(): boolean {
    return this.unconfirmed;
  }

  /** Stores the secret received at enrollment (never logged); unconfirmed until a server accepts it. */
  saveSecret(secret: string): void {
    // The mark first: a crash between the two writes leaves a mark without a new secret (harmless).
    writeAtomic(path.join(this.dir, UNCONFIRMED), '', 0o600);
    writeAtomic(path.join(this.dir, 'agent-secret'), `${secret}\n`, 0o600);
    this.secret = secret;
    this.unconfirmed = true;
  }

  /** A server welcomed a connection authenticated by the stored secret. */
  confirmSecret(): void {
    if (!this.unconfirmed) return;
    fs.rmSync(path.join(this.dir, UNCONFIRMED), { force: true });
    this.unconfirmed = false;
  }
}

/** Marks a secret no server has accepted yet (its presence alone). */
const UNCONFIRMED = 'agent-secret-unconfirmed';

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
