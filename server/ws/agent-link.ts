import type { WebSocket } from 'ws';
import {
  AgentToServer,
  CloseCode,
  decodeFrame,
  DEFAULT_BULK_WINDOW,
  DEFAULT_BULK_WRITE_THRESHOLD,
  FrameError,
  HEARTBEAT_RTT_CAPABILITY,
  isExactHeartbeat,
  isExactHello,
  MessageDispatcher,
  MIN_PROTOCOL_VERSION,
  PriorityWriter,
  PROTOCOL_VERSION,
  refOf,
  streamKeyOf,
  writeMessage,
  type Hello,
  type Outgoing,
  type Refusal,
  type SendOpts,
  type ServerToAgent,
} from '../../protocol/index.js';
import type { AuditLog } from '../auth/audit.js';
import type { AgentChannel, DisconnectReason, Enrollment, Fleet } from '../fleet/fleet.js';
import { EnrollmentRefused } from '../fleet/repo.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { AdmissionTicket } from './admission.js';
import type { Pinger } from './pinger.js';
import { MessageBucket } from './rate.js';
import { pauseTight, resumeTight } from './read-stop.js';
import type { AgentBinaryHandlers, AgentCtx, AgentHandlers } from './handlers.js';

let nextLinkId = 1;

export interface AgentLinkDeps {
  fleet: Fleet;
  audit: AuditLog;
  log: Logger;
  metrics: Metrics;
  handlers: AgentHandlers;
  binary: AgentBinaryHandlers;
  heartbeatIntervalMs: number;
  helloTimeoutMs: number;
  maxInvalidMessages: number;
  /** Control messages per second (average) and burst before the socket is closed. */
  messageRate: number;
  messageBurst: number;
  /** Bulk frames (file data) wait while the socket holds this many bytes; keystrokes go first. */
  bulkWriteThreshold?: number;
  /** Bulk the agent may have unread, kernel buffers included (0: unbounded). */
  bulkWindow?: number;
  /** Server → agent RTT pings (one timer for the node, bounded rate); each pong's round trip is observed. */
  pinger?: Pinger;
  /**
   * Whether the server holds the execution or terminal session a reply names, for this agent
   * (only such replies are exempt from the message rate; without it, none are).
   */
  expected?(agentId: string, kind: 'execution' | 'session' | 'transfer', id: string): boolean;
}

/** Credentials established at the upgrade; `enrollSecret` and `enrollment` only for a new agent presenting an enrollment token. */
export interface AgentAuth {
  agentId: string;
  secretHash: string;
  enrollSecret?: string;
  enrollment?: Enrollment & { tokenId: string | null };
  /**
   * A known agent that presented its secret and, beside it, an enrollment token (it holds a secret
   * no server has accepted yet): the token's grant, asked for only if the enrollment that gave the
   * secret turns out undone when the agent is claimed (see Fleet.connect); null when not valid.
   */
  reenroll?: () => Promise<(Enrollment & { tokenId: string | null }) | null>;
}

/**
 * One agent socket. Owns its hello deadline and closes exactly once; nothing is accepted
 * before a valid hello, and the hello must name the agent the credentials belong to.
 */
export class AgentLink implements AgentChannel, AgentCtx {
  readonly linkId = nextLinkId++;
  /** The agent the credentials belong to (a hello naming another is refused). */
  readonly agentId: string;
  private helloTimer: NodeJS.Timeout | undefined;
  /** When the outstanding ping went out (one at a time, so a pong always matches it). */
  private pingSentAt: number | null = null;
  private state: 'awaiting-hello' | 'connecting' | 'ready' | 'closed' = 'awaiting-hello';
  /** Messages that came while the hello was being registered (made only then). */
  private pending: Array<{ data: Buffer; binary: boolean }> | null = null;
  private invalidCount = 0;
  private readonly dispatcher: MessageDispatcher<AgentToServer, AgentCtx>;
  private closeReason: DisconnectReason | null = null;
  private byeReceived = false;
  private closedWhileConnecting = false;
  /** agents.conn_generation of this connection (0 when ownership is not recorded). */
  private generation = 0;
  /**
   * An enrollment whose welcome (with the secret) went out and whose agent has not sent anything
   * since: until it does, nobody knows whether the secret arrived. If the socket closes first the
   * enrollment is undone, so an agent that never got its secret enrolls again with its token (and
   * one that did reconnects with the secret, or enrolls again: it still sends the token).
   */
  private unconfirmed: (Enrollment & { tokenId: string | null }) | null = null;
  /** The welcome went out while the link was still registering; and a message came after it. */
  private welcomeSent = false;
  private spokeAfterWelcome = false;
  private pausedSince: number | null = null;
  private keepAlive: NodeJS.Timeout | undefined;
  private logger: Logger | undefined;
  private bucket: MessageBucket | undefined;
  /** Priority writer, once bulk (file data) was sent on this socket. */
  private out: PriorityWriter | undefined;

  constructor(
    private readonly ws: WebSocket,
    readonly remoteAddress: string | null,
    /** Reduced to the id and secret hash once the welcome went out (an enrollment's secret is not kept for the socket's life). */
    private auth: AgentAuth,
    private readonly deps: AgentLinkDeps,
    /** The admission slot of this socket's handshake: given back at welcome, or when the socket closes before. */
    private admission?: AdmissionTicket,
  ) {
    this.agentId = auth.agentId;
    this.dispatcher = agentDispatcher(deps.handlers);
    this.helloTimer = setTimeout(() => this.close(CloseCode.helloTimeout, 'protocol error', 'no hello in time'), deps.helloTimeoutMs);
    // One set of listener functions for every link (the socket names its link): a connection
    // carries no closures of its own for the life of the socket.
    (ws as LinkedSocket)[LINK] = this;
    ws.on('message', onSocketMessage);
    ws.on('error', onSocketError);
    ws.on('close', onSocketClose);
    ws.on('pong', onSocketPong);
  }

  /** @internal The socket's `error` (see the shared listeners below). */
  socketError(err: Error): void {
    this.log.warn({ err: err.message }, 'agent socket error');
    if (!this.closeReason) this.closeReason = 'protocol error';
  }

  /** @internal The socket's `pong`. */
  socketPong(d: Buffer): void {
    // A pong of the priority writer's window (it carries a payload) is not the RTT sample.
    if (d.length > 0) return this.out?.pong(d);
    if (this.pingSentAt === null) return;
    this.deps.metrics.heartbeatRtt.observe((performance.now() - this.pingSentAt) / 1000);
    this.pingSentAt = null;
  }

  /** One RTT ping (the pinger's turn for this link); a ping still unanswered is not repeated. */
  ping(): boolean {
    if (this.pingSentAt !== null || this.ws.readyState !== this.ws.OPEN) return false;
    this.pingSentAt = performance.now();
    this.ws.ping();
    return true;
  }

  /**
   * The link is its handlers' context (AgentCtx: agentId, channel, log), so a connection carries no
   * separate context object with its accessor and closures.
   */
  get channel(): AgentChannel {
    return this;
  }

  /** Child logger bound to this agent and link, made on first use (most links never log). */
  get log(): Logger {
    return (this.logger ??= this.deps.log.child({ agentId: this.auth.agentId, link: this.linkId }));
  }

  /** `json`: `msg` already serialized (the same message sent to many agents is serialized once). */
  send(msg: ServerToAgent, json?: string): boolean {
    if (this.ws.readyState !== this.ws.OPEN) return false;
    if (this.out) this.out.send(json ?? JSON.stringify(msg), { key: streamKeyOf(msg) });
    else this.ws.send(json ?? JSON.stringify(msg));
    return true;
  }
  /**
   * Keystrokes and control messages go ahead of bulk (file data). The priority writer is made on
   * the first bulk frame: most of a large fleet's sockets never carry any. `opts.done` is called
   * only when this answers true.
   */
  sendBinary(buf: Uint8Array | readonly Uint8Array[], opts?: SendOpts): boolean {
    if (this.ws.readyState !== this.ws.OPEN) return false;
    if (opts?.bulk)
      this.out ??= new PriorityWriter(this.ws, this.deps.bulkWriteThreshold ?? DEFAULT_BULK_WRITE_THRESHOLD, this.deps.bulkWindow ?? DEFAULT_BULK_WINDOW);
    if (this.out) this.out.send(buf as Outgoing, opts);
    else {
      const done = opts?.done;
      writeMessage(this.ws, buf, done ? () => done() : noop);
    }
    return true;
  }
  bufferedAmount(): number {
    return this.out ? this.out.buffered : this.ws.bufferedAmount;
  }
  /**
   * Stops reading (backpressure: the database is behind on output). While paused the agent's
   * liveness pings are not read, so nothing would answer them: an unsolicited pong every heartbeat
   * interval tells the agent the server is alive, only not reading.
   */
  pause(): void {
    if (this.ws.readyState !== this.ws.OPEN || this.pausedSince !== null) return;
    // Nothing read ahead while paused (up to 128 KiB per socket otherwise): see pauseTight.
    pauseTight(this.ws);
    this.pausedSince = Date.now();
    this.keepAlive = setInterval(() => {
      if (this.ws.readyState === this.ws.OPEN) this.ws.pong();
    }, this.deps.heartbeatIntervalMs);
    this.keepAlive.unref();
  }
  resume(): void {
    clearInterval(this.keepAlive);
    this.keepAlive = undefined;
    this.pausedSince = null;
    if (this.ws.readyState === this.ws.OPEN) resumeTight(this.ws);
  }
  /** Whether the server has stopped reading this socket (its heartbeats wait unread: not the agent's fault). */
  isPaused(): boolean {
    return this.pausedSince !== null;
  }
  close(code: number, reason: DisconnectReason | string, detail?: string): void {
    if (!this.closeReason) this.closeReason = reason as DisconnectReason;
    clearTimeout(this.helloTimer);
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, (detail ?? reason).slice(0, 120));
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => this.ws.terminate(), 5000).unref();
  }

  private sendError(code: Refusal['code'], message: string, ref?: string): void {
    this.refuse({ code, message, ...(ref ? { ref } : {}) });
  }
  private refuse(r: Refusal): void {
    this.deps.metrics.messageErrors.inc({ channel: 'agent', code: r.code });
    this.send({ type: 'error', ...r });
    if (++this.invalidCount > this.deps.maxInvalidMessages) this.close(CloseCode.protocolError, 'protocol error', 'too many invalid messages');
  }

  /** @internal The socket's `message` (and the messages queued while the hello was registered). */
  onMessage(data: Buffer, binary: boolean): void {
    if (this.state === 'closed') return;
    if (this.state === 'connecting') {
      if (this.welcomeSent) this.spokeAfterWelcome = true;
      (this.pending ??= []).push({ data, binary });
      return;
    }
    if (this.unconfirmed && this.state === 'ready') this.confirmEnrollment();
    if (binary) return this.onBinary(data);
    const decoded = this.dispatcher.decode(data.toString('utf8'));
    if (!decoded.ok) return this.refuse(decoded.refusal);
    const msg = decoded.msg;
    // Replies the server paced itself (one per execution or terminal it asked for and still holds
    // for this agent) are not counted: a busy agent running thousands of short scripts is not a
    // flood. Everything else is, including replies naming ids the server does not hold (those
    // cost database reads), so an agent cannot flood by dressing messages up as replies.
    if (!this.expectedReply(msg) && !(this.bucket ??= new MessageBucket(this.deps.messageRate, this.deps.messageBurst)).take()) return this.rateExceeded();
    this.deps.metrics.countMessage('agent', msg.type);
    if (this.state === 'awaiting-hello') {
      if (msg.type !== 'hello') return this.sendError('invalid_message', 'the first message must be hello', msg.type);
      void this.onHello(msg);
      return;
    }
    if (msg.type === 'hello') return this.sendError('invalid_message', 'hello already received', 'hello');
    if (msg.type === 'bye') this.byeReceived = true;
    const handled = this.dispatcher.dispatch(this, msg, (err, type) => this.log.error({ err, type }, 'agent handler failed'));
    if (!handled) return this.sendError('unknown_type', `no handler for ${msg.type}`, refOf(msg));
  }

  private onBinary(data: Buffer): void {
    if (this.state !== 'ready') return this.sendError('invalid_message', 'the first message must be hello');
    try {
      const f = decodeFrame(data);
      if (f.op === 'termData') this.deps.binary.termData(this, f.sessionId, f.data);
      else if (f.op === 'execOutput') this.deps.binary.execOutput(this, f.executionId, f.stream, f.seq, f.data);
      else this.deps.binary.fileData(this, f.transferId, f.offset, f.data);
    } catch (err) {
      if (err instanceof FrameError) return this.sendError('invalid_message', `bad frame: ${err.message}`);
      this.log.error({ err }, 'binary handler failed');
    }
  }

  /** Too many control messages: cut the socket once, with a reason, and audit it once. */
  /** A reply to something the server asked this agent for and still holds (see AgentLinkDeps.expected). */
  private expectedReply(msg: AgentToServer): boolean {
    if (this.state !== 'ready' || !this.deps.expected) return false;
    switch (msg.type) {
      case 'exec.started':
      case 'exec.finished':
      case 'exec.rejected':
        return this.deps.expected(this.auth.agentId, 'execution', msg.executionId);
      case 'term.opened':
      case 'term.exit':
        return this.deps.expected(this.auth.agentId, 'session', msg.sessionId);
      case 'file.ack':
      case 'file.result':
      case 'term.transfer':
        return this.deps.expected(this.auth.agentId, 'transfer', msg.transferId);
      default:
        return false;
    }
  }

  private rateExceeded(): void {
    if (this.closeReason) return;
    this.deps.metrics.messageErrors.inc({ channel: 'agent', code: 'rate_limited' });
    this.log.warn({ rate: this.deps.messageRate, burst: this.deps.messageBurst }, 'agent exceeded its control message rate; closing');
    this.send({
      type: 'error',
      code: 'rate_limited',
      message: `more than ${this.deps.messageRate} control messages per second (burst ${this.deps.messageBurst})`,
    });
    this.close(CloseCode.protocolError, 'protocol error', 'control message rate exceeded');
    void this.deps.audit
      .record({
        actor: { username: `agent:${this.auth.agentId}`, role: null, ip: this.remoteAddress },
        action: 'agent.rate_limited',
        targetType: 'agent',
        targetId: this.auth.agentId,
        ok: false,
        details: { rate: this.deps.messageRate, burst: this.deps.messageBurst },
      })
      .catch(() => {});
  }

  private async onHello(h: Hello): Promise<void> {
    clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    if (h.agentId !== this.auth.agentId) {
      this.log.warn({ claimed: h.agentId }, 'hello claims another agent id');
      await this.deps.audit
        .record({
          actor: { username: `agent:${this.auth.agentId}`, role: null, ip: this.remoteAddress },
          action: 'agent.identity_mismatch',
          targetType: 'agent',
          targetId: h.agentId.slice(0, 128),
          ok: false,
        })
        .catch(() => {});
      this.send({ type: 'error', code: 'forbidden', message: 'hello agentId does not match the credentials' });
      return this.close(CloseCode.identityMismatch, 'protocol error', 'identity mismatch');
    }
    if (h.protocol < MIN_PROTOCOL_VERSION) {
      this.send({
        type: 'error',
        code: 'bad_request',
        message: `protocol ${h.protocol} is too old; server speaks ${MIN_PROTOCOL_VERSION}..${PROTOCOL_VERSION}`,
      });
      return this.close(CloseCode.unsupportedProtocol, 'protocol error', 'unsupported protocol');
    }
    if (this.deps.fleet.get(h.agentId)?.revokedAt != null) {
      // Revoked between the upgrade and this hello.
      this.send({ type: 'error', code: 'unauthorized', message: 'agent revoked' });
      return this.close(CloseCode.revoked, 'revoked');
    }
    this.state = 'connecting';
    const enrollment = this.auth.enrollSecret ? (this.auth.enrollment ?? { labels: null, tokenId: null }) : undefined;
    // Enrolled again with the secret it presented (its enrollment was undone after the upgrade).
    let reenrolled: (Enrollment & { tokenId: string | null }) | null = null;
    const ask = this.auth.reenroll;
    const reenroll = ask ? async () => (reenrolled = await ask()) : undefined;
    try {
      this.generation = await this.deps.fleet.connect(this, h, this.auth.secretHash, enrollment, reenroll);
    } catch (err) {
      if (err instanceof EnrollmentRefused) {
        // A socket that upgraded with the enrollment token while the id was free must not take over
        // an agent that enrolled meanwhile (it would receive that agent's tasks and their env).
        this.log.warn({ why: err.message }, 'enrollment refused at hello');
        await this.deps.audit
          .record({
            actor: { username: `agent:${h.agentId}`, role: null, ip: this.remoteAddress },
            action: 'agent.enroll',
            targetType: 'agent',
            targetId: h.agentId,
            ok: false,
            details: { reason: err.message, tokenId: enrollment?.tokenId ?? null },
          })
          .catch(() => {});
        this.send({ type: 'error', code: 'conflict', message: `enrollment refused: ${err.message}` });
        this.state = 'closed';
        this.closeReason = 'protocol error';
        this.close(CloseCode.enrollmentRefused, 'protocol error', `enrollment refused: ${err.message}`);
        return;
      }
      this.log.error({ err }, 'could not register agent');
      this.send({ type: 'error', code: 'unavailable', message: 'server could not register the agent; retry later' });
      this.state = 'closed';
      this.closeReason = 'protocol error';
      this.ws.close(1011, 'registration failed');
      // Part of the enrollment may be committed (the claim and the token's use): the agent never
      // gets its secret, so undo it or every retry would meet 401 with the token spent.
      if (enrollment) await this.abandonEnrollment(enrollment, 'registration failed');
      return;
    }
    if (this.closedWhileConnecting || this.ws.readyState !== this.ws.OPEN) return this.closedBeforeReady(enrollment, 'connection closed before welcome');
    this.send({
      type: 'welcome',
      protocol: Math.min(h.protocol, PROTOCOL_VERSION),
      agentId: h.agentId,
      heartbeatIntervalMs: this.deps.heartbeatIntervalMs,
      serverTime: Date.now(),
      ...(this.auth.enrollSecret ? { secret: this.auth.enrollSecret } : {}),
    });
    // What the agent sent before this point came before the welcome: it confirms nothing.
    this.welcomeSent = true;
    // The secret went out: the link keeps only what identifies the agent (the enrollment, if any, is `unconfirmed` below).
    if (this.auth.enrollSecret !== undefined || this.auth.reenroll !== undefined) this.auth = { agentId: this.auth.agentId, secretHash: this.auth.secretHash };
    this.deps.fleet.welcomed(this, h);
    this.admission?.done(true);
    this.admission = undefined;
    const again = reenrolled as (Enrollment & { tokenId: string | null }) | null;
    if (again) {
      void this.deps.audit
        .record({
          actor: { username: `agent:${h.agentId}`, role: null, ip: this.remoteAddress },
          action: 'agent.enroll',
          targetType: 'agent',
          targetId: h.agentId,
          details: {
            name: h.name,
            hostname: h.hostname,
            tokenId: again.tokenId,
            reason: 'enrolled again with the secret it holds (the enrollment that gave it was undone)',
          },
        })
        .catch((err: unknown) => this.log.error({ err }, 'could not audit an enrollment'));
    }
    if (enrollment) {
      this.unconfirmed = enrollment;
      await this.deps.audit
        .record({
          actor: { username: `agent:${h.agentId}`, role: null, ip: this.remoteAddress },
          action: 'agent.enroll',
          targetType: 'agent',
          targetId: h.agentId,
          details: { name: h.name, hostname: h.hostname, tokenId: enrollment.tokenId },
        })
        .catch((err: unknown) => this.log.error({ err }, 'could not audit an enrollment'));
      // The socket may have closed during that write: onClose left the disconnection to us.
      if (this.closedWhileConnecting) {
        if (this.spokeAfterWelcome) this.confirmEnrollment();
        return this.closedBeforeReady(this.unconfirmed ?? undefined, 'connection closed before the agent confirmed its secret');
      }
    }
    this.state = 'ready';
    // An agent that reports its heartbeats' round trips is not pinged for them.
    if (!h.capabilities.includes(HEARTBEAT_RTT_CAPABILITY)) this.deps.pinger?.add(this);
    const queued = this.pending;
    this.pending = null;
    if (this.unconfirmed && this.spokeAfterWelcome) this.confirmEnrollment();
    if (queued) for (const m of queued) this.onMessage(m.data, m.binary);
  }

  /**
   * The socket closed while the registration was being written (onClose could not mark the agent
   * offline then: it was not live yet): record the disconnection with the reason it would have
   * used, and undo an enrollment whose secret may not have reached the agent.
   */
  private async closedBeforeReady(enrollment: (Enrollment & { tokenId: string | null }) | undefined, why: string): Promise<void> {
    this.state = 'closed';
    this.pending = null;
    await this.deps.fleet.disconnect(this.auth.agentId, this.linkId, this.disconnectReason());
    if (enrollment) await this.abandonEnrollment(enrollment, why);
  }

  /** The agent spoke after the welcome that carried its secret: it holds it, the enrollment stands. */
  private confirmEnrollment(): void {
    this.unconfirmed = null;
    this.deps.fleet.enrollmentConfirmed(this.auth.agentId, this.auth.secretHash);
  }

  /** Undoes an enrollment whose secret never reached the agent, and audits that it did not complete. */
  private async abandonEnrollment(enrollment: Enrollment & { tokenId: string | null }, reason: string): Promise<void> {
    this.unconfirmed = null;
    const agentId = this.auth.agentId;
    let undone = false;
    try {
      undone = await this.deps.fleet.abandonEnrollment(agentId, this.auth.secretHash, enrollment, this.generation);
    } catch (err) {
      this.log.error({ err }, 'could not undo an incomplete enrollment yet: retried every presence flush interval until the database answers');
    }
    this.log.warn({ reason, undone }, 'enrollment not completed');
    await this.deps.audit
      .record({
        actor: { username: `agent:${agentId}`, role: null, ip: this.remoteAddress },
        action: 'agent.enroll',
        targetType: 'agent',
        targetId: agentId,
        ok: false,
        details: { reason, undone, tokenId: enrollment.tokenId },
      })
      .catch(() => {});
  }

  private disconnectReason(): DisconnectReason {
    return this.closeReason ?? (this.byeReceived ? 'agent shutdown' : 'connection lost');
  }

  /** @internal The socket's `close`. */
  async onClose(): Promise<void> {
    // Not welcomed: the handshake's admission slot is given back now.
    this.admission?.done(false);
    this.admission = undefined;
    this.out?.clear();
    clearTimeout(this.helloTimer);
    this.deps.pinger?.delete(this);
    clearInterval(this.keepAlive);
    const prev = this.state;
    this.state = 'closed';
    this.pending = null;
    if (prev === 'connecting') {
      // onHello is still registering the agent; it sees this flag and records the disconnection.
      this.closedWhileConnecting = true;
      return;
    }
    if (prev !== 'ready') return;
    await this.deps.fleet.disconnect(this.auth.agentId, this.linkId, this.disconnectReason());
    if (this.unconfirmed) await this.abandonEnrollment(this.unconfirmed, 'connection closed before the agent confirmed its secret');
  }
}

const noop = (): void => {};

/** The link of an agent socket, set on the socket by the link's constructor. */
const LINK = Symbol('muster.agentLink');
type LinkedSocket = WebSocket & { [LINK]: AgentLink };
function onSocketMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  (this as LinkedSocket)[LINK].onMessage(data, isBinary);
}
function onSocketError(this: WebSocket, err: Error): void {
  (this as LinkedSocket)[LINK].socketError(err);
}
function onSocketClose(this: WebSocket): void {
  void (this as LinkedSocket)[LINK].onClose();
}
function onSocketPong(this: WebSocket, d: Buffer): void {
  (this as LinkedSocket)[LINK].socketPong(d);
}

/** Heartbeats (thousands a second across a fleet) and hellos (a whole fleet at once after a restart) are checked by hand first; zod decides anything else. */
const AGENT_FAST_PATHS = { heartbeat: isExactHeartbeat, hello: isExactHello };

/** One dispatcher per handlers object, shared by every agent link. */
const dispatchers = new WeakMap<AgentHandlers, MessageDispatcher<AgentToServer, AgentCtx>>();
function agentDispatcher(h: AgentHandlers): MessageDispatcher<AgentToServer, AgentCtx> {
  let d = dispatchers.get(h);
  if (!d) dispatchers.set(h, (d = new MessageDispatcher<AgentToServer, AgentCtx>(AgentToServer, h, AGENT_FAST_PATHS)));
  return d;
}
