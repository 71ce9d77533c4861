import type { WebSocket } from 'ws';
import {
  CloseCode,
  ConsoleToServer,
  decodeFrame,
  DEFAULT_BULK_WINDOW,
  DEFAULT_BULK_WRITE_THRESHOLD,
  FrameError,
  InvalidCounter,
  isExactTermAck,
  MessageDispatcher,
  PriorityWriter,
  refOf,
  streamKeyOf,
  type Refusal,
  type SendOpts,
  type ServerToConsole,
} from '../../protocol/index.js';
import type { Principal } from '../auth/auth-service.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { MessageBucket } from './rate.js';
import type { ConsoleBinaryHandlers, ConsoleChannel, ConsoleHandlers } from './handlers.js';

let nextId = 1;
const dispatchers = new WeakMap<ConsoleHandlers, MessageDispatcher<ConsoleToServer, ConsoleChannel>>();
/** One dispatcher per handlers object, shared by every console socket. */
function consoleDispatcher(h: ConsoleHandlers): MessageDispatcher<ConsoleToServer, ConsoleChannel> {
  let d = dispatchers.get(h);
  // term.ack (one per chunk of terminal output a console wrote) skips the schema when it is exact.
  if (!d) dispatchers.set(h, (d = new MessageDispatcher<ConsoleToServer, ConsoleChannel>(ConsoleToServer, h, { 'term.ack': isExactTermAck })));
  return d;
}

export interface ConsoleLinkDeps {
  log: Logger;
  metrics: Metrics;
  handlers: ConsoleHandlers;
  binary: ConsoleBinaryHandlers;
  maxInvalidMessages: number;
  /** Control messages per second (average) and burst before the socket is closed. */
  messageRate: number;
  messageBurst: number;
  /** Records the one audit row of a socket closed for flooding. */
  auditRateLimited?(link: ConsoleLink): void;
  /** Droppable messages are skipped above this many buffered bytes. */
  softBufferLimit: number;
  /** Above this many buffered bytes the console is too slow and is disconnected (it resyncs on reconnect). */
  hardBufferLimit: number;
  /** Bulk frames wait while the socket holds this many bytes (MUSTER_BULK_WRITE_THRESHOLD). */
  bulkWriteThreshold?: number;
  /** Bulk the console may have unread, kernel buffers included (MUSTER_BULK_WINDOW; 0: unbounded). */
  bulkWindow?: number;
  /** Peer address of the socket (audit). */
  remoteAddress?: string | null;
  /** True once the principal's session, token or user changed or expired (AuthService.isStale). */
  isStale(p: Principal): boolean;
  /** Re-reads the principal's credential from the database (AuthService.stillValid); false: it ended. */
  recheck?(p: Principal): Promise<boolean>;
  /** How often `recheck` runs for this socket (MUSTER_SOCKET_RECHECK_SEC). */
  recheckIntervalMs?: number;
}

/** Longest setTimeout delay node accepts; later expiries are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One operator console socket; owns its cleanups and runs them exactly once. */
export class ConsoleLink implements ConsoleChannel {
  readonly id = nextId++;
  private readonly cleanups: Array<() => void> = [];
  private closed = false;
  private readonly invalid: InvalidCounter;
  private rateLimited = false;
  private readonly bucket: MessageBucket;
  private expiryTimer: NodeJS.Timeout | undefined;
  private recheckTimer: NodeJS.Timeout | undefined;
  private rechecking = false;
  /** Set when the socket was closed because its credentials ended: what it controls ends too. */
  sessionEnded = false;
  private readonly dispatcher: MessageDispatcher<ConsoleToServer, ConsoleChannel>;
  private readonly log: Logger;
  private readonly out: PriorityWriter;
  readonly remoteAddress: string | null;

  constructor(
    private readonly ws: WebSocket,
    readonly principal: Principal,
    private readonly deps: ConsoleLinkDeps,
  ) {
    this.remoteAddress = deps.remoteAddress ?? null;
    this.log = deps.log.child({ console: this.id, user: principal.username });
    this.dispatcher = consoleDispatcher(deps.handlers);
    this.invalid = new InvalidCounter(deps.maxInvalidMessages);
    this.bucket = new MessageBucket(deps.messageRate, deps.messageBurst);
    this.out = new PriorityWriter(ws, deps.bulkWriteThreshold ?? DEFAULT_BULK_WRITE_THRESHOLD, deps.bulkWindow ?? DEFAULT_BULK_WINDOW);
    ws.on('pong', (d) => this.out.pong(d));
    ws.on('message', (d, bin) => this.onMessage(d as Buffer, bin));
    ws.on('error', (err) => this.log.warn({ err: err.message }, 'console socket error'));
    ws.on('close', () => this.dispose());
    this.armExpiry();
    this.armRecheck();
    // The credentials may have ended while the upgrade was being authenticated (the event came
    // before this socket was registered anywhere): such a socket never becomes ready.
    if (deps.isStale(principal)) this.close(CloseCode.sessionEnded, 'session ended');
  }

  /** Closes the socket when the session or token expires, even if it stays silent. */
  private armExpiry(): void {
    const at = this.principal.expiresAt;
    if (at === null || this.closed) return;
    this.expiryTimer = setTimeout(
      () => {
        if (this.deps.isStale(this.principal)) this.close(CloseCode.sessionEnded, 'session expired');
        else this.armExpiry();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now()) + 10),
    );
    this.expiryTimer.unref();
  }

  /**
   * Re-reads the credential on an interval: a change made where no event reaches this process
   * (reset-password run from the command line has no bus) still ends the socket, within one
   * interval. One query per socket per interval, never per message; a failed query keeps it.
   */
  private armRecheck(): void {
    const { recheck, recheckIntervalMs } = this.deps;
    if (!recheck || !recheckIntervalMs) return;
    this.recheckTimer = setInterval(() => {
      if (this.closed || this.rechecking) return;
      this.rechecking = true;
      recheck(this.principal)
        .then(
          (ok) => {
            if (!ok && !this.closed) this.close(CloseCode.sessionEnded, 'session ended');
          },
          (err: unknown) => this.log.warn({ err }, 'could not re-check the console credential; trying again next interval'),
        )
        .finally(() => {
          this.rechecking = false;
        });
    }, recheckIntervalMs);
    this.recheckTimer.unref();
  }

  send(msg: ServerToConsole, droppable = false, json?: string): boolean {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return false;
    const buffered = this.out.buffered;
    if (buffered > this.deps.hardBufferLimit) {
      this.close(CloseCode.protocolError, 'console too slow');
      return false;
    }
    if (droppable && buffered > this.deps.softBufferLimit) return false;
    this.out.send(json ?? JSON.stringify(msg), { bulk: droppable, key: streamKeyOf(msg) });
    return true;
  }
  sendBinary(buf: Uint8Array, opts?: SendOpts): boolean {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return false;
    this.out.send(buf, opts);
    return true;
  }
  bufferedAmount(): number {
    return this.out.buffered;
  }
  close(code: number, reason: string): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(code, reason.slice(0, 120));
    setTimeout(() => this.ws.terminate(), 5000).unref();
    if (code === CloseCode.sessionEnded && !this.closed) {
      // The rights are gone now, not after the close handshake: stop acting for this socket and
      // run the cleanups (the terminals it controls are closed, subscriptions dropped) at once.
      this.sessionEnded = true;
      this.log.info({ reason }, 'console session ended');
      this.dispose();
    }
  }
  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.cleanups.push(fn);
  }

  private dispose(): void {
    if (this.closed) return;
    this.closed = true;
    this.out.clear();
    clearTimeout(this.expiryTimer);
    clearInterval(this.recheckTimer);
    this.deps.metrics.consoles.dec();
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (err) {
        this.log.error({ err }, 'console cleanup failed');
      }
    }
  }

  private error(code: Refusal['code'], message: string, ref?: string): void {
    this.refuse({ code, message, ...(ref ? { ref } : {}) });
  }
  private refuse(r: Refusal): void {
    this.deps.metrics.messageErrors.inc({ channel: 'console', code: r.code });
    this.send({ type: 'error', ...r });
    if (this.invalid.count()) this.close(CloseCode.protocolError, 'too many invalid messages');
  }

  /** Too many control messages: cut the socket once, with a reason, and audit it once. */
  private rateExceeded(): void {
    if (this.rateLimited) return;
    this.rateLimited = true;
    this.deps.metrics.messageErrors.inc({ channel: 'console', code: 'rate_limited' });
    this.log.warn({ rate: this.deps.messageRate, burst: this.deps.messageBurst }, 'console exceeded its control message rate; closing');
    this.send({ type: 'error', code: 'rate_limited', message: `more than ${this.deps.messageRate} messages per second (burst ${this.deps.messageBurst})` });
    this.close(CloseCode.protocolError, 'control message rate exceeded');
    this.deps.auditRateLimited?.(this);
  }

  private onMessage(data: Buffer, binary: boolean): void {
    if (this.closed) return;
    // Every message acts with the principal's current rights: a logout, revocation, role change,
    // disabling or expiry since the upgrade ends the socket before the message does anything.
    if (this.deps.isStale(this.principal)) return this.close(CloseCode.sessionEnded, 'session ended');
    if (binary) {
      try {
        const f = decodeFrame(data);
        if (f.op !== 'termData') return this.error('invalid_message', 'consoles may only send terminal data frames');
        this.deps.binary.termData(this, f.sessionId, f.data);
      } catch (err) {
        if (err instanceof FrameError) return this.error('invalid_message', `bad frame: ${err.message}`);
        this.log.error({ err }, 'console binary handler failed');
      }
      return;
    }
    const decoded = this.dispatcher.decode(data.toString('utf8'));
    if (!decoded.ok) return this.refuse(decoded.refusal);
    const msg = decoded.msg;
    // Flow-control acks (one per chunk of terminal output, O(1) each) are paced by the output, like
    // the binary frames; every other message counts against the socket's bucket.
    if (msg.type !== 'term.ack' && !this.bucket.take()) return this.rateExceeded();
    this.deps.metrics.countMessage('console', msg.type);
    const handled = this.dispatcher.dispatch(this, msg, (err, type) => this.log.error({ err, type }, 'console handler failed'));
    if (!handled) this.error('unknown_type', `no handler for ${msg.type}`, refOf(msg));
  }
}
