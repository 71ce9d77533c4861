/**
 * A headless console for terminal tests and benchmarks: drives /ws/console like the Vue console
 * does (term.* control messages, TERM_DATA binary frames) and acknowledges output the way
 * xterm.js does (after the bytes were "written"), unless told to hold its acks.
 */
import { decodeFrame, encodeTermData } from '../../protocol/index.js';
import { consoleSocket, type Api } from './harness.js';

type Sock = Awaited<ReturnType<typeof consoleSocket>>;
const enc = new TextEncoder();
/** Decoded text kept per session (older text is dropped; offsets stay absolute). */
const TEXT_KEEP = 1 << 20;

export interface Closed {
  reason: string;
  exitCode?: number | null;
}

/** One session as this console sees it. */
export class TermView {
  /** Output bytes received. */
  bytes = 0;
  /** Output bytes acknowledged. */
  acked = 0;
  /** Hold acknowledgements (a stalled browser tab). */
  holdAcks = false;
  private readonly decoder = new TextDecoder('utf-8');
  private textBuf = '';
  private dropped = 0;
  private waiters = new Set<() => void>();
  closed: Closed | null = null;
  readonly closedP: Promise<Closed>;
  private resolveClosed!: (c: Closed) => void;
  /** Every raw chunk, when `keepRaw` is on (multi-byte split tests). */
  raw: Uint8Array[] | null = null;

  constructor(
    readonly client: TermClient,
    readonly sessionId: string,
    readonly mode: 'control' | 'watch',
    public cols: number,
    public rows: number,
  ) {
    this.closedP = new Promise((r) => (this.resolveClosed = r));
  }

  /** Absolute length of the decoded text so far (use as `since`). */
  get mark(): number {
    return this.dropped + this.textBuf.length;
  }

  /** Text decoded since absolute offset `since` (as far as it is still kept). */
  textSince(since = 0): string {
    return this.textBuf.slice(Math.max(0, since - this.dropped));
  }

  onData(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    this.raw?.push(chunk.slice());
    this.textBuf += this.decoder.decode(chunk, { stream: true });
    if (this.textBuf.length > 2 * TEXT_KEEP) {
      const cut = this.textBuf.length - TEXT_KEEP;
      this.textBuf = this.textBuf.slice(cut);
      this.dropped += cut;
    }
    if (!this.holdAcks) this.ackPending();
    this.wake();
  }

  /** Acknowledges every received byte not yet acknowledged. */
  ackPending(): void {
    const n = this.bytes - this.acked;
    if (n <= 0) return;
    this.acked = this.bytes;
    this.client.sendJson({ type: 'term.ack', sessionId: this.sessionId, bytes: n });
  }

  onClosed(c: Closed): void {
    this.closed = c;
    this.resolveClosed(c);
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  write(data: string | Uint8Array): void {
    this.client.ws.send(encodeTermData(this.sessionId, typeof data === 'string' ? enc.encode(data) : data));
  }

  resize(cols: number, rows: number): void {
    this.cols = cols;
    this.rows = rows;
    this.client.sendJson({ type: 'term.resize', sessionId: this.sessionId, cols, rows });
  }

  close(): void {
    this.client.sendJson({ type: 'term.close', sessionId: this.sessionId });
  }

  detach(): void {
    this.client.sendJson({ type: 'term.detach', sessionId: this.sessionId });
  }

  /** Waits until the text since `since` matches `pattern`; returns the match. */
  waitText(pattern: RegExp | string, since = 0, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(this.textSince(since));
        if (m) {
          done();
          resolve(m);
        } else if (this.closed) {
          done();
          reject(new Error(`session closed (${this.closed.reason}) before ${re}; text: ${JSON.stringify(this.textSince(since).slice(-500))}`));
        }
      };
      const t = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${re}; text: ${JSON.stringify(this.textSince(since).slice(-500))}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Runs a command and resolves with its output (between two unique markers). */
  async run(cmd: string, timeoutMs = 15_000): Promise<string> {
    const tag = Math.random().toString(36).slice(2, 8);
    const since = this.mark;
    // The markers are built by the shell (printf), so the echoed command line never matches them.
    this.write(`printf '%s%s\\n' '<<${tag}' '>>'; ${cmd}; printf '%s%s\\n' '<<${tag}' '<<'\r`);
    const m = await this.waitText(new RegExp(`<<${tag}>>\\r?\\n([\\s\\S]*?)<<${tag}<<`), since, timeoutMs);
    return m[1]!;
  }
}

/** A console socket with terminal sessions. */
export class TermClient {
  readonly sessions = new Map<string, TermView>();
  private readonly byRef = new Map<string, TermView>();
  private refs = 0;

  private constructor(readonly sock: Sock) {
    sock.ws.on('message', (d, isBinary) => {
      if (isBinary) {
        sock.binary.length = 0; // the harness keeps every frame; a flood would hold it all
        const f = decodeFrame(new Uint8Array(d as Buffer));
        if (f.op === 'termData') this.sessions.get(f.sessionId)?.onData(f.data);
        return;
      }
      const m = sock.messages[sock.messages.length - 1];
      if (m?.type === 'term.closed') this.sessions.get(m.sessionId)?.onClosed({ reason: m.reason, exitCode: m.exitCode });
      // Register at once: replayed frames follow term.opened and may be read in the same tick.
      if (m?.type === 'term.opened') {
        const v = new TermView(this, m.sessionId, m.mode, m.cols, m.rows);
        this.sessions.set(m.sessionId, v);
        this.byRef.set(m.ref, v);
      }
    });
  }

  static async connect(server: { url: string; wsUrl: string }, api: Api, origin?: string | null): Promise<TermClient> {
    return new TermClient(await consoleSocket(server, api, origin === undefined ? server.url : origin));
  }

  get ws() {
    return this.sock.ws;
  }

  get messages(): any[] {
    return this.sock.messages;
  }

  sendJson(m: object): void {
    this.sock.ws.send(JSON.stringify(m));
  }

  /** Sends term.open and resolves with the session, or rejects with the server's error. */
  async open(agentId: string, cols = 80, rows = 24): Promise<TermView> {
    const ref = `r${++this.refs}`;
    this.sendJson({ type: 'term.open', ref, agentId, cols, rows });
    return this.await(ref);
  }

  async attach(sessionId: string, mode: 'control' | 'watch'): Promise<TermView> {
    const ref = `r${++this.refs}`;
    this.sendJson({ type: 'term.attach', ref, sessionId, mode });
    return this.await(ref);
  }

  /**
   * Opens a broadcast over `agentIds` (term.broadcast.open): resolves with its id and the panes in
   * order (null where that agent's session was refused), or rejects with the server's error.
   */
  async broadcast(agentIds: string[], cols = 80, rows = 24): Promise<{ id: string; panes: (TermView | null)[] }> {
    const ref = `b${++this.refs}`;
    this.sendJson({ type: 'term.broadcast.open', ref, agentIds, cols, rows });
    const m = await this.sock.next((x) => x.ref === ref && (x.type === 'term.broadcast.opened' || x.type === 'error'), 20_000, `answer to ${ref}`);
    if (m.type === 'error') throw Object.assign(new Error(`${m.code}: ${m.message}`), { code: m.code });
    const panes = await Promise.all(agentIds.map((_, i) => this.await(`${ref}/${i}`).catch(() => null)));
    return { id: m.broadcastId as string, panes };
  }

  /** Types into a broadcast: one frame named by the broadcast id. */
  broadcastWrite(broadcastId: string, data: string): void {
    this.ws.send(encodeTermData(broadcastId, enc.encode(data)));
  }

  private async await(ref: string): Promise<TermView> {
    const m = await this.sock.next((x) => x.ref === ref && (x.type === 'term.opened' || x.type === 'error'), 20_000, `answer to ${ref}`);
    if (m.type === 'error') throw Object.assign(new Error(`${m.code}: ${m.message}`), { code: m.code });
    const v = this.byRef.get(ref)!;
    this.byRef.delete(ref);
    return v;
  }

  close(): void {
    this.sock.close();
  }
}
