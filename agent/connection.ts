import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';
import {
  CloseCode,
  decodeFrame,
  DEFAULT_BULK_WINDOW,
  DEFAULT_BULK_WRITE_THRESHOLD,
  MessageDispatcher,
  isExactTermAck,
  PriorityWriter,
  ServerToAgent,
  streamKeyOf,
  type AgentToServer,
  type Hello,
  type SendOpts,
  type ServerMessage,
  type ServerMessageType,
} from '../protocol/index.js';
import type { AgentLog } from './log.js';
import type { AgentState } from './state.js';

export type ServerHandler<T extends ServerMessageType> = (msg: ServerMessage<T>) => void;
/** Every server→agent message except welcome (handled here) needs a handler: the compiler checks. */
export type ServerHandlers = { [K in Exclude<ServerMessageType, 'welcome'>]: ServerHandler<K> };

export interface ConnectionOptions {
  /** One ws(s):// URL or several separated by commas (cluster nodes): each failure moves to the next. */
  serverUrl: string;
  /** This agent's name, for the log ("connected" says who connected). */
  name?: string;
  enrollToken: string | undefined;
  caFile: string | undefined;
  state: AgentState;
  log: AgentLog;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /**
   * After the server closed with `server shutdown` (a restart, most often), the backoff is capped at
   * this for `restartWindowMs`: the replacement is usually listening within seconds, and a fleet
   * whose backoff doubled while nothing listened would trickle back over a minute.
   */
  restartBackoffMaxMs?: number;
  restartWindowMs?: number;
  /** Largest message accepted from the server (agent config maxPayload). */
  maxPayload: number;
  /** Bulk frames wait while the socket holds this many bytes (interactive ones go first). */
  bulkWriteThreshold?: number;
  /** Bulk the server may have unread, kernel buffers included (0: unbounded). */
  bulkWindow?: number;
  buildHello(): Hello;
  handlers: ServerHandlers;
  onTermData(sessionId: string, data: Uint8Array): void;
  onFileData?(transferId: string, offset: number, data: Uint8Array): void;
  onWelcome(heartbeatIntervalMs: number): void;
  onDisconnected(): void;
}

/** Backoff cap and how long it applies after the server closed with `server shutdown` (MUSTER_AGENT_RESTART_*). */
export const DEFAULT_RESTART_BACKOFF_MAX_MS = 3000;
export const DEFAULT_RESTART_WINDOW_MS = 60_000;

/** Full-jitter exponential backoff: a random delay in [0, min(max, initial·2^attempt)). */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, rand = Math.random): number {
  const cap = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(rand() * cap);
}

/** Retry-After in seconds (delta-seconds or an HTTP date); null when absent or unusable. */
export function parseRetryAfter(v: string | string[] | undefined, now = Date.now()): number | null {
  if (typeof v !== 'string' || v.trim() === '') return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, Math.ceil((t - now) / 1000));
}

/** TLS verification error codes (OpenSSL via Node): the server's certificate is not trusted. */
const TLS_CODES = /^(UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|CERT_|ERR_TLS_CERT_ALTNAME_INVALID|HOSTNAME_MISMATCH|ERR_SSL_)/;

/** Why a connection attempt failed, in words an operator can act on. */
export function describeConnectError(err: NodeJS.ErrnoException, serverUrl: string, caFile: string | undefined): string {
  const code = err.code ?? '';
  let host = serverUrl;
  try {
    host = new URL(serverUrl).host;
  } catch {
    /* keep the raw URL */
  }
  if (code === 'ECONNREFUSED') return `connection refused by ${host}: is the server running and listening on that port?`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `cannot resolve ${host}: check the server address`;
  if (code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${host} unreachable (${code}): check the network or firewall`;
  if (code === 'ECONNRESET') return `connection reset by ${host} (a proxy, or plain ws:// to a TLS port?)`;
  if (TLS_CODES.test(code)) {
    return `TLS verification failed for ${host}: ${err.message} (${code})${caFile ? `; is ${caFile} the CA that signed the server certificate?` : '; for a private CA pass --ca-file'}`;
  }
  return err.message || code || 'unknown error';
}

/** How long a connect may take to reach the server (TCP, and TLS on wss://) before the attempt is given up. */
export const CONNECT_TIMEOUT_MS = 15_000;
/**
 * How long, once connected, the agent waits for the server to answer its upgrade. A connection the
 * server's kernel completed waits in its accept queue, first in first out, until the server takes
 * it, and a busy Node server takes one connection per event-loop iteration (libuv#3696): 50–100 a
 * second on a cluster node holding 15,000 agents on a machine short of CPU. An agent that gives up
 * rejoins at the back of that queue and leaves behind a connection the server will still spend an
 * accept on, whose answer nobody reads (bench/RESULTS.md, Cluster, 2026-12-03, session 16). So the
 * wait is long once the server's host has answered; a server that accepts nothing for this long is
 * given up (and the next one in --server tried).
 */
export const UPGRADE_ANSWER_TIMEOUT_MS = 60_000;

/**
 * Opens the socket of an upgrade (ws's createConnection) and gives it CONNECT_TIMEOUT_MS to
 * connect: ws's handshakeTimeout (UPGRADE_ANSWER_TIMEOUT_MS) covers the whole opening handshake.
 */
export function connectWithin(timeoutMs: number, secure: boolean) {
  return (o: tls.ConnectionOptions & net.NetConnectOpts & { socketPath?: string; host?: string }): net.Socket => {
    const socket = secure
      ? tls.connect({ ...o, path: undefined, servername: o.servername ?? (o.host && !net.isIP(o.host) ? o.host : '') } as tls.ConnectionOptions)
      : net.connect({ ...o, path: o.socketPath } as net.NetConnectOpts);
    const timer = setTimeout(() => {
      const err: NodeJS.ErrnoException = new Error(`connect timed out after ${timeoutMs / 1000} s`);
      err.code = 'ETIMEDOUT';
      socket.destroy(err);
    }, timeoutMs);
    socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
    return socket;
  };
}

/** Why the server refused the upgrade, by status. */
export function describeUpgradeRefusal(status: number | undefined, retryAfterSec: number | null, enrolling: boolean): string {
  if (status === 401) {
    return enrolling
      ? 'server refused our credentials (HTTP 401 Unauthorized): the enrollment token is wrong or expired; check --token, or issue a new one in Admin → Enrollment'
      : 'server refused our credentials (HTTP 401 Unauthorized): the stored agent secret is no longer valid (agent revoked or deleted?); re-enroll with a new token';
  }
  if (status === 503 || status === 429) {
    return `server busy or starting (HTTP ${status})${retryAfterSec !== null ? `, retrying after ${retryAfterSec} s (Retry-After)` : ''}`;
  }
  if (status === 404) return 'server answered HTTP 404 at the upgrade: is the --server URL a Muster server (path /ws/agent)?';
  return `server answered HTTP ${status ?? '?'} at the upgrade`;
}

/**
 * The agent's one socket to the server: authenticates at the upgrade (enrollment token or id +
 * secret), sends hello, and reconnects forever with backoff + jitter, honouring 503 Retry-After.
 */
export class ServerConnection {
  private ws: WebSocket | null = null;
  private out: PriorityWriter | null = null;
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Liveness of the server side: a ping after 3 heartbeat intervals without a word from it, a cut when it goes unanswered for as long. */
  private liveness: NodeJS.Timeout | undefined;
  private lastHeard = 0;
  /** When the liveness ping now unanswered was sent (0: none outstanding). */
  private pingSentAt = 0;
  private stopped = false;
  private welcomed = false;
  private retryAfterMs: number | null = null;
  /** Until when the short restart backoff applies (the server said it was shutting down). */
  private restartUntil = 0;
  /** When the server was last reachable (welcomed), or when the agent started. */
  lastConnectedAt = Date.now();
  connected = false;
  lastError: string | null = null;
  /** The last failure logged at warn: a server that stays down is reported once, not every retry. */
  private loggedError: string | null = null;
  private readonly dispatcher: MessageDispatcher<ServerToAgent, undefined>;
  private readonly urls: string[];
  private urlIndex = 0;

  constructor(private readonly o: ConnectionOptions) {
    this.urls = o.serverUrl
      .split(',')
      .map((u) => u.trim())
      .filter(Boolean);
    // Agents of one fleet start at different nodes of the list, so a fleet restart spreads out.
    this.urlIndex = this.urls.length > 1 ? Math.floor(Math.random() * this.urls.length) : 0;
    // The shared dispatcher calls handlers as (ctx, msg); the agent's handlers take the message only.
    const adapted = Object.fromEntries(Object.entries(o.handlers).map(([type, h]) => [type, (_: undefined, m: never) => (h as (m: unknown) => void)(m)]));
    // term.ack (one per chunk of terminal output the consoles wrote) skips the schema when it is exact.
    this.dispatcher = new MessageDispatcher<ServerToAgent, undefined>(ServerToAgent, adapted, { 'term.ack': isExactTermAck });
  }

  start(): void {
    this.open();
  }

  /** The server URL connected to, or tried last. */
  get currentUrl(): string {
    return this.urls[this.urlIndex] ?? this.o.serverUrl;
  }

  private url(): string {
    const u = new URL(this.currentUrl);
    if (u.pathname === '/' || u.pathname === '') u.pathname = '/ws/agent';
    return u.toString();
  }

  private open(): void {
    if (this.stopped) return;
    const headers: Record<string, string> = { 'X-Muster-Agent-Id': this.o.state.agentId };
    const secret = this.o.state.getSecret();
    if (secret) headers['Authorization'] = `Bearer ${secret}`;
    // Until a server accepts the secret, the token goes too: the server undoes an enrollment whose
    // agent never spoke after the welcome (it cannot know the secret arrived), and then knows the id
    // no more; the token enrolls it again. A known id is authenticated by the secret alone.
    if (this.o.enrollToken && (!secret || this.o.state.secretUnconfirmed())) headers['X-Muster-Enroll-Token'] = this.o.enrollToken;
    const url = this.url();
    const ws = new WebSocket(url, {
      headers,
      perMessageDeflate: false,
      // Masking protects proxies from frames a hostile web page controls; an agent's frames are
      // its own, so a zero mask lets ws skip masking (and the server unmasking) every byte.
      generateMask: (mask: Buffer) => void mask.fill(0),
      handshakeTimeout: UPGRADE_ANSWER_TIMEOUT_MS,
      // ws calls it with one options object (net.createConnection is typed with all its overloads).
      createConnection: connectWithin(CONNECT_TIMEOUT_MS, url.startsWith('wss:')) as unknown as typeof net.createConnection,
      maxPayload: this.o.maxPayload,
      ...(this.o.caFile ? { ca: fs.readFileSync(this.o.caFile) } : {}),
    });
    this.ws = ws;
    const out = new PriorityWriter(ws, this.o.bulkWriteThreshold ?? DEFAULT_BULK_WRITE_THRESHOLD, this.o.bulkWindow ?? DEFAULT_BULK_WINDOW);
    this.out = out;
    this.welcomed = false;
    // After a refused upgrade, terminate() makes ws emit "closed before the connection was
    // established": that is our own doing, not the reason, which was already logged.
    let refused = false;
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      refused = true;
      const retryAfterSec = parseRetryAfter(res.headers['retry-after']);
      if ((res.statusCode === 503 || res.statusCode === 429) && retryAfterSec !== null) {
        // Never wait longer than the backoff cap: a misconfigured proxy must not park the fleet.
        this.retryAfterMs = Math.min(retryAfterSec * 1000, this.o.backoffMaxMs);
      }
      const why = describeUpgradeRefusal(res.statusCode, retryAfterSec, !secret && Boolean(this.o.enrollToken));
      this.lastError = why;
      if (res.statusCode === 401) this.o.log.error({ status: 401 }, `cannot connect: ${why}`);
      else this.failed({ status: res.statusCode, retryAfterSec }, why);
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      ws.send(JSON.stringify(this.o.buildHello()));
    });
    ws.on('message', (data, isBinary) => {
      this.lastHeard = Date.now();
      this.pingSentAt = 0;
      this.onMessage(data as Buffer, isBinary);
    });
    ws.on('pong', (d) => {
      this.lastHeard = Date.now();
      this.pingSentAt = 0;
      out.pong(d);
    });
    ws.on('error', (err: NodeJS.ErrnoException) => {
      if (refused) return;
      if (this.connected) {
        this.lastError = err.message;
        this.o.log.debug({ err }, 'socket error');
        return;
      }
      const why = describeConnectError(err, this.url(), this.o.caFile);
      this.lastError = why;
      this.failed({ code: err.code }, why);
    });
    ws.on('close', (code, reason) => {
      clearInterval(this.liveness);
      const was = this.connected;
      this.connected = false;
      if (this.ws === ws) {
        this.ws = null;
        this.out?.clear();
        this.out = null;
      }
      if (was && code === CloseCode.serverShutdown) this.restartUntil = Date.now() + (this.o.restartWindowMs ?? DEFAULT_RESTART_WINDOW_MS);
      if (was) {
        this.lastConnectedAt = Date.now();
        this.o.log.warn({ code, reason: reason.toString() }, 'disconnected from server');
        this.o.onDisconnected();
      }
      if (code === CloseCode.identityMismatch || code === CloseCode.revoked) this.o.log.error({ code, reason: reason.toString() }, 'server refuses this agent');
      this.schedule();
    });
  }

  /** A failed attempt: warn once per distinct reason (the first retry says why), debug after. */
  private failed(o: object, why: string): void {
    if (why !== this.loggedError) {
      this.loggedError = why;
      this.o.log.warn({ ...o, server: this.currentUrl }, `cannot connect: ${why}`);
    } else {
      this.o.log.debug(o, `cannot connect: ${why}`);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    // Several servers: the next attempt goes to the next one (the same backoff applies across the
    // list, so a fleet whose node died spreads over the others without a storm).
    if (this.urls.length > 1) this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    let delay: number;
    const honoured = this.retryAfterMs != null;
    if (this.retryAfterMs != null) {
      // The server named the time to come back: wait that (plus jitter) without growing the
      // backoff, so a shed or draining agent is not pushed into a minute-long window on top.
      delay = this.retryAfterMs + Math.floor(Math.random() * 1000);
      this.retryAfterMs = null;
    } else {
      const max =
        Date.now() < this.restartUntil ? Math.min(this.o.backoffMaxMs, this.o.restartBackoffMaxMs ?? DEFAULT_RESTART_BACKOFF_MAX_MS) : this.o.backoffMaxMs;
      delay = backoffDelay(this.attempt, this.o.backoffInitialMs, max);
      this.attempt++;
    }
    this.o.log.debug({ delay, attempt: this.attempt, retryAfter: honoured }, 'reconnecting');
    this.timer = setTimeout(() => this.open(), delay);
  }

  private onMessage(data: Buffer, binary: boolean): void {
    if (binary) {
      try {
        const f = decodeFrame(data);
        if (f.op === 'termData') this.o.onTermData(f.sessionId, f.data);
        else if (f.op === 'fileData') this.o.onFileData?.(f.transferId, f.offset, f.data);
      } catch (err) {
        this.send({ type: 'error', code: 'invalid_message', message: `bad frame: ${(err as Error).message}` });
      }
      return;
    }
    const decoded = this.dispatcher.decode(data.toString('utf8'));
    // Newer servers may send commands this agent does not know: say so, keep going (never cut the
    // server off for it).
    if (!decoded.ok) {
      this.send({ type: 'error', ...decoded.refusal });
      return;
    }
    const msg = decoded.msg;
    if (msg.type === 'welcome') {
      if (msg.secret) {
        this.o.state.saveSecret(msg.secret);
        this.o.log.info({}, 'enrolled; secret stored');
      } else if (this.o.state.getSecret()) {
        // Welcomed on the stored secret (no new one): the server knows we hold it.
        this.o.state.confirmSecret();
      }
      this.welcomed = true;
      this.connected = true;
      this.attempt = 0;
      this.lastError = null;
      this.loggedError = null;
      this.lastConnectedAt = Date.now();
      this.o.log.info(
        { name: this.o.name, server: this.currentUrl, heartbeatMs: msg.heartbeatIntervalMs },
        `connected as ${this.o.name ? `"${this.o.name}" ` : ''}(${this.o.state.agentId})`,
      );
      this.watchServer(msg.heartbeatIntervalMs * 3);
      this.o.onWelcome(msg.heartbeatIntervalMs);
      return;
    }
    if (!this.welcomed) return;
    this.dispatcher.dispatch(undefined, msg, (err, type) => this.o.log.error({ err, type }, 'handler failed'));
  }

  /**
   * A frozen server or a silently dropped path (no FIN, no RST) would leave this socket "open" for
   * the many minutes TCP takes to give up, with the agent reporting itself connected. The server
   * answers pings by itself (ws): a ping unanswered for a whole interval means the peer is gone:
   * cut the socket and reconnect. A server heard from within the interval (a heartbeat's ack, any
   * message) is not pinged: a healthy server is never asked, and costs no pong per agent.
   *
   * The cut waits for the ping's own answer, not for a length of silence: a server that answers
   * only pongs is silent for just under an interval at one check (its pong came right after the
   * previous one), so no ping goes out then, and a silence limit of two intervals was crossed at
   * the next check by any timer lateness (a healthy server cut). The decision is taken after the
   * loop's next poll (setImmediate), so a pong already in the socket when a late timer fires counts.
   */
  private watchServer(everyMs: number): void {
    clearInterval(this.liveness);
    this.lastHeard = Date.now();
    this.pingSentAt = 0;
    const ws = this.ws;
    const open = () => ws !== null && ws === this.ws && ws.readyState === WebSocket.OPEN;
    this.liveness = setInterval(() => {
      if (!open()) return clearInterval(this.liveness);
      const sent = this.pingSentAt;
      if (sent !== 0 && Date.now() - sent >= everyMs) {
        setImmediate(() => {
          if (!open() || this.pingSentAt !== sent) return; // answered meanwhile
          this.lastError = `server silent for ${Math.round((Date.now() - this.lastHeard) / 1000)} s`;
          this.o.log.warn({ silentMs: Date.now() - this.lastHeard }, 'server silent; reconnecting');
          ws!.terminate();
        });
        return;
      }
      if (this.pingSentAt === 0 && Date.now() - this.lastHeard >= everyMs) {
        this.pingSentAt = Date.now();
        ws!.ping();
      }
    }, everyMs);
    this.liveness.unref();
  }

  /** Sends a control message; false when not connected. */
  send(msg: AgentToServer): boolean {
    const ws = this.ws;
    if (!ws || !this.out || ws.readyState !== WebSocket.OPEN) return false;
    this.out.send(JSON.stringify(msg), { key: streamKeyOf(msg) });
    return true;
  }

  sendBinary(buf: Uint8Array, opts?: SendOpts): boolean {
    const ws = this.ws;
    if (!ws || !this.out || ws.readyState !== WebSocket.OPEN || !this.connected) return false;
    this.out.send(buf, opts);
    return true;
  }

  /** Bytes the socket holds plus bulk output waiting for room. */
  bufferedAmount(): number {
    return this.out?.buffered ?? 0;
  }

  /** Says bye and closes; resolves once the socket is closed (or after a timeout). */
  async stop(reason: string): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.liveness);
    const ws = this.ws;
    if (!ws) return;
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'bye', reason }));
      ws.close(1000, reason.slice(0, 120));
    } else {
      ws.terminate();
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 3000);
      ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
