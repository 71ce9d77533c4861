import WebSocket from 'ws';
import type { z } from 'zod';
import { decodeFrame, FrameError, type ConsoleToServer, type Frame, type ServerToConsole } from '../protocol/index.js';
import type { Client } from './client.js';

/** Keeps a quiet socket alive through proxies that drop idle connections (nginx's default is 60 s). */
const PING_EVERY_MS = 25_000;

/** What the CLI sends: the console protocol's inputs (fields with defaults may be omitted). */
type Outgoing = z.input<typeof ConsoleToServer>;

/**
 * The console socket (/ws/console) as the CLI uses it: authenticated with the API token as a
 * Bearer header (no Origin: not a browser), JSON control messages and binary frames.
 */
export class ConsoleSocket {
  private readonly msgHandlers = new Set<(m: ServerToConsole) => void>();
  private readonly frameHandlers = new Set<(f: Frame) => void>();
  private readonly ping: NodeJS.Timeout;
  /** Resolves with the close code and reason when the socket ends. */
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d, binary) => {
      if (binary) {
        let f: Frame;
        try {
          f = decodeFrame(new Uint8Array(d as Buffer));
        } catch (err) {
          if (err instanceof FrameError) return;
          throw err;
        }
        for (const h of this.frameHandlers) h(f);
        return;
      }
      let m: ServerToConsole;
      try {
        m = JSON.parse((d as Buffer).toString('utf8')) as ServerToConsole;
      } catch {
        return;
      }
      for (const h of this.msgHandlers) h(m);
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    this.ping = setInterval(() => this.send({ type: 'ping' }), PING_EVERY_MS);
    this.ping.unref();
    void this.closed.then(() => clearInterval(this.ping));
  }

  /**
   * Opens the socket with the client's server (or `base`: another node's address, a path on the
   * server's origin or an absolute URL) and token; rejects with the server's refusal.
   */
  static connect(c: Client, base: string = c.server): Promise<ConsoleSocket> {
    const root = base === c.server ? base : new URL(base, c.server).toString().replace(/\/+$/, '');
    const url = `${root.replace(/^http/, 'ws')}/ws/console`;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${c.bearer}` }, perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new ConsoleSocket(ws)));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d.toString();
        });
        res.on('end', () => {
          let msg = `${res.statusCode ?? ''} ${res.statusMessage ?? ''}`.trim();
          try {
            const e = (JSON.parse(body) as { error?: { message?: string } }).error;
            if (e?.message) msg = `${e.message} (HTTP ${res.statusCode})`;
          } catch {
            /* not JSON */
          }
          reject(new Error(`console socket refused: ${msg}`));
        });
      });
      ws.once('error', (err) => reject(new Error(`cannot open the console socket at ${url}: ${err.message}`)));
    });
  }

  onMessage(h: (m: ServerToConsole) => void): () => void {
    this.msgHandlers.add(h);
    return () => this.msgHandlers.delete(h);
  }

  onFrame(h: (f: Frame) => void): () => void {
    this.frameHandlers.add(h);
    return () => this.frameHandlers.delete(h);
  }

  /** Waits for the first message matching `pred` (rejects if the socket closes first). */
  next<T extends ServerToConsole>(pred: (m: ServerToConsole) => m is T): Promise<T>;
  next(pred: (m: ServerToConsole) => boolean): Promise<ServerToConsole>;
  next(pred: (m: ServerToConsole) => boolean): Promise<ServerToConsole> {
    return new Promise((resolve, reject) => {
      const off = this.onMessage((m) => {
        if (!pred(m)) return;
        off();
        resolve(m);
      });
      void this.closed.then((c) => {
        off();
        reject(new Error(`console socket closed (${c.code}${c.reason ? ` ${c.reason}` : ''})`));
      });
    });
  }

  send(m: Outgoing): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  sendBinary(b: Uint8Array): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(b, { binary: true });
  }

  close(): void {
    clearInterval(this.ping);
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
  }
}
