import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { terminalDenial, type ConsoleMessage, type ErrorCode } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import { roleAtLeast } from '../auth/auth-service.js';
import type { Core } from '../core.js';
import { dbFailure } from '../db/failures.js';
import type { AgentCtx, ConsoleChannel } from '../ws/handlers.js';
import type { TransferManager } from '../files/transfer.js';
import { BroadcastGroups } from './broadcast.js';
import { TerminalRecorder } from './recorder.js';
import { isRemoteConsole, RemoteTerminals } from './remote.js';
import type { TerminalRepo } from './repo.js';
import { TerminalSession, type Attachment } from './session.js';
import { TerminalTransfers } from './transfer.js';

/** Time the agent has to confirm a new session. */
const OPEN_TIMEOUT_MS = 15_000;
/** Time the agent has to report a closed session's end before the server records it anyway. */
const CLOSE_TIMEOUT_MS = 10_000;
/** Refusals of a watcher's input are answered at most this often. */
const REFUSAL_EVERY_MS = 1000;

/**
 * Terminal relay: allocates sessions, asks agents for PTYs, relays bytes both ways with flow
 * control, keeps detached shells for reattach, records, stores and audits. Sockets reach it
 * only through the handlers in index.ts.
 */
export class TerminalService {
  readonly sessions = new Map<string, TerminalSession>();
  private readonly watched = new WeakSet<ConsoleChannel>();
  private readonly pendingWrites = new Set<Promise<unknown>>();
  private stopping = false;
  /** Broadcast typing groups (term.broadcast.*): input fan-out over sessions opened here. */
  readonly broadcasts: BroadcastGroups;
  /** Uploads into and downloads from a session's shell directory (REST, through the agent). */
  readonly transfers: TerminalTransfers;
  /** Sessions on other nodes for consoles here, and consoles of other nodes for sessions here (remote.ts). */
  readonly remote: RemoteTerminals;

  constructor(
    private readonly core: Core,
    private readonly repo: TerminalRepo,
    fileTransfers: () => TransferManager,
  ) {
    this.broadcasts = new BroadcastGroups(core, this);
    this.transfers = new TerminalTransfers(core, fileTransfers);
    this.remote = new RemoteTerminals(core, this);
  }

  /** The other node a console here reaches this session on (null: here, or not at all). */
  private elsewhere(ch: ConsoleChannel, sessionId: string): string | null {
    return this.sessions.has(sessionId) ? null : this.remote.routeOf(ch, sessionId);
  }

  private get cfg() {
    return this.core.config;
  }

  private actor(ch: ConsoleChannel | null): Actor {
    if (!ch) return { username: 'system', role: null, ip: null };
    return { username: ch.principal.username, role: ch.principal.role, ip: ch.remoteAddress ?? null };
  }

  /**
   * Runs `fn` until it succeeds while its failure is one to wait out (database away, disk full),
   * with backoff (MUSTER_DB_RETRY_INITIAL_MS doubling to MUSTER_DB_RETRY_MAX_MS). A closed session
   * must end up closed in the database and audited, however long the outage: the row and the
   * audit entry are written once the database can take them. Logged when it starts failing and
   * when it got through. During shutdown one more attempt is made, then it gives up (the next
   * start closes rows left open).
   */
  private async persist(fn: () => Promise<unknown>, what: string, sessionId: string): Promise<void> {
    let delay = this.cfg.dbRetryInitialMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await fn();
        if (attempt > 1) this.core.log.info({ sessionId, what, attempts: attempt }, 'terminal bookkeeping written after retries');
        return;
      } catch (err) {
        const failure = dbFailure(err);
        if (!failure || this.stopping) throw err;
        if (attempt === 1) this.core.log.warn({ sessionId, what, failure, err }, 'terminal bookkeeping failed; retrying until the database takes it');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(this.cfg.dbRetryMaxMs, delay * 2);
      }
    }
  }

  /** Runs a database/audit write without blocking the relay; failures are logged, stop() waits for them. */
  private track(p: Promise<unknown>, what: string): void {
    const q = p.catch((err: unknown) => this.core.log.error({ err, what }, 'terminal bookkeeping failed'));
    this.pendingWrites.add(q);
    void q.finally(() => this.pendingWrites.delete(q));
  }

  private error(ch: ConsoleChannel, code: ErrorCode, message: string, ref?: string): void {
    ch.send({ type: 'error', code, message, ...(ref ? { ref } : {}) });
  }

  /** Detaches a console from every session when its socket closes (registered once per socket). */
  private watch(ch: ConsoleChannel): void {
    if (this.watched.has(ch)) return;
    this.watched.add(ch);
    ch.onClose(() => {
      for (const s of this.sessions.values()) {
        const wasOpener = s.forgetOpener(ch);
        const controlled = wasOpener || s.attachments.get(ch.id)?.mode === 'control';
        // Credentials ended (logout, revoke, demotion...): the shells this socket drove end with
        // it rather than waiting for a reattach the principal may no longer make.
        if (ch.sessionEnded && controlled) this.close(s, 'session ended', ch);
        else if (s.attachments.has(ch.id)) this.detach(s, ch.id);
      }
    });
  }

  /* ---------------- console side ---------------- */

  /** `term.open`; `allocated` is told the session id once the session exists (broadcasts group them). */
  async open(ch: ConsoleChannel, m: ConsoleMessage<'term.open'>, allocated?: (sessionId: string) => void): Promise<void> {
    const p = ch.principal;
    if (!roleAtLeast(p.role, 'operator')) {
      this.error(ch, 'forbidden', 'opening a terminal requires the operator role', m.ref);
      // Aggregated: a viewer repeating this is one audit row per window, with a count.
      this.core.audit.refused(
        { actor: this.actor(ch), action: 'terminal.open', targetType: 'agent', targetId: m.agentId, ok: false, details: { why: 'forbidden' } },
        { anyTarget: true },
      );
      return;
    }
    // An agent connected to another node: the session lives there (remote.ts); a console of
    // another node is never sent further (the agent moved meanwhile: it is not online here).
    const node = isRemoteConsole(ch) ? null : this.remote.agentElsewhere(m.agentId);
    if (node) {
      const url = m.direct ? this.core.nodes.nodeUrl(node) : null;
      // The console goes to that node itself (its checks, caps and audit happen there).
      if (url) return void ch.send({ type: 'term.elsewhere', ref: m.ref, node, url, agentId: m.agentId });
      return this.openElsewhere(ch, node, m, allocated);
    }
    // Caps (MUSTER_MAX_TERMINALS_PER_USER / _PER_SERVER): every session holds a shell, a PTY and
    // scrollback until it closes or its detach timeout ends.
    const open = [...this.sessions.values()];
    const mine = open.filter((x) => x.owner.id === p.id).length;
    if (mine >= this.core.config.maxTerminalsPerUser || open.length >= this.core.config.maxTerminalsPerServer) {
      const perUser = mine >= this.core.config.maxTerminalsPerUser;
      const msg = perUser
        ? `you have ${mine} open terminal sessions; at most ${this.core.config.maxTerminalsPerUser} per user (MUSTER_MAX_TERMINALS_PER_USER): close one first`
        : `this server has ${open.length} open terminal sessions; at most ${this.core.config.maxTerminalsPerServer} (MUSTER_MAX_TERMINALS_PER_SERVER)`;
      this.core.audit.refused(
        {
          actor: this.actor(ch),
          action: 'terminal.open',
          targetType: 'agent',
          targetId: m.agentId,
          ok: false,
          details: { why: perUser ? 'user_limit' : 'server_limit' },
        },
        { anyTarget: true },
      );
      return this.error(ch, 'limit_exceeded', msg, m.ref);
    }
    const agent = this.core.fleet.get(m.agentId);
    if (!agent || agent.revokedAt != null) return this.error(ch, 'not_found', 'no such agent', m.ref);
    if (!this.core.fleet.isOnline(m.agentId)) return this.error(ch, 'agent_offline', `agent ${agent.name} is offline`, m.ref);
    // Refused early when the host's reported policy forbids terminals (the agent refuses it anyway).
    const denied = terminalDenial(agent.policy);
    if (denied) {
      this.core.audit.refused({
        actor: this.actor(ch),
        action: 'terminal.open',
        targetType: 'agent',
        targetId: m.agentId,
        ok: false,
        details: { why: 'policy_denied' },
      });
      return this.error(ch, 'policy_denied', `${agent.name}: ${denied}`, m.ref);
    }

    const id = randomUUID();
    const recordingRel = this.cfg.terminalRecording ? path.join('recordings', `${id}.rec`) : null;
    const recorder = recordingRel
      ? new TerminalRecorder(path.join(this.core.dataDir, recordingRel), {
          cols: m.cols,
          rows: m.rows,
          maxBytes: this.cfg.terminalRecordingMaxBytes,
          maxQueuedBytes: this.cfg.terminalRecordingMaxQueuedBytes,
          title: `${p.username}@${agent.name}`,
          allow: (n) => this.core.disk.allow(n),
          onStop: (why) => this.core.log.warn({ sessionId: id, why }, 'terminal recording stopped; it is marked truncated'),
        })
      : null;
    const s = new TerminalSession({
      id,
      agentId: m.agentId,
      owner: { id: p.id, username: p.username },
      cols: m.cols,
      rows: m.rows,
      scrollbackBytes: this.cfg.terminalScrollbackBytes,
      watchMaxLagBytes: this.cfg.terminalWatchMaxLagBytes,
      recorder,
      opener: { ch, ref: m.ref },
      ackAgent: (bytes) => void this.core.fleet.send(m.agentId, { type: 'term.ack', sessionId: id, bytes }),
    });
    this.sessions.set(id, s);
    allocated?.(id);
    this.watch(ch);
    try {
      await this.repo.insert({
        id,
        agentId: m.agentId,
        userId: p.id,
        username: p.username,
        ip: ch.remoteAddress ?? null,
        node: this.cfg.nodeId,
        cols: m.cols,
        rows: m.rows,
        openedAt: Date.now(),
        recording: recordingRel,
      });
      await this.core.audit.record({ actor: this.actor(ch), action: 'terminal.open', targetType: 'agent', targetId: m.agentId, details: { sessionId: id } });
    } catch (err) {
      this.core.log.error({ err, sessionId: id }, 'could not store the terminal session');
      this.sessions.delete(id);
      void recorder?.close();
      const failure = dbFailure(err);
      const code = failure === 'no_space' ? 'insufficient_storage' : failure === 'unavailable' ? 'database_unavailable' : 'unavailable';
      return this.error(ch, code, 'could not store the session; try again', m.ref);
    }
    if (s.state !== 'opening') return; // the agent went away meanwhile (finish() already answered)
    if (!this.core.fleet.send(m.agentId, { type: 'term.open', sessionId: id, cols: m.cols, rows: m.rows })) {
      return this.finish(s, 'agent went offline', null, 'agent_offline');
    }
    s.awaitOpen(OPEN_TIMEOUT_MS, () => this.finish(s, 'the agent did not start the terminal in time', null, 'unavailable'));
    this.core.log.info({ sessionId: id, agentId: m.agentId, user: p.username }, 'terminal opening');
  }

  private async openElsewhere(ch: ConsoleChannel, node: string, m: ConsoleMessage<'term.open'>, allocated?: (sessionId: string) => void): Promise<void> {
    try {
      const id = await this.remote.open(ch, node, m);
      if (id) allocated?.(id);
    } catch (err) {
      this.core.log.warn({ err, node, agentId: m.agentId }, 'could not open a terminal through the node holding the agent');
      this.error(ch, 'unavailable', `the server node holding this agent (${node}) did not answer; try again`, m.ref);
    }
  }

  attach(ch: ConsoleChannel, m: ConsoleMessage<'term.attach'>): void {
    const s = this.sessions.get(m.sessionId);
    if (!s && !isRemoteConsole(ch)) return void this.attachElsewhere(ch, m);
    if (!s || !s.live || s.state === 'opening') return this.error(ch, 'not_found', 'no such live session', m.ref);
    const p = ch.principal;
    const owner = s.owner.id === p.id;
    if (m.mode === 'control' && !(owner && roleAtLeast(p.role, 'operator'))) {
      return this.error(ch, 'forbidden', 'only the operator who opened the session can control it', m.ref);
    }
    if (m.mode === 'watch' && !owner && p.role !== 'admin') {
      return this.error(ch, 'forbidden', "watching another operator's session requires the admin role", m.ref);
    }
    this.watch(ch);
    const prev = s.attachments.get(ch.id);
    if (prev) s.detach(ch.id);
    if (m.mode === 'control') {
      const other = s.controller();
      if (other) {
        s.detach(other.ch.id);
        other.ch.send({ type: 'term.closed', sessionId: s.id, reason: 'attached from another console' });
      }
    }
    ch.send({ type: 'term.opened', ref: m.ref, sessionId: s.id, agentId: s.agentId, mode: m.mode, cols: s.cols, rows: s.rows });
    s.attach(ch, m.mode);
    if (m.mode === 'watch' || !owner) {
      this.track(
        this.core.audit.record({
          actor: this.actor(ch),
          action: 'terminal.watch',
          targetType: 'terminal',
          targetId: s.id,
          details: { owner: s.owner.username, agentId: s.agentId },
        }),
        'audit',
      );
    } else {
      this.track(
        this.core.audit.record({ actor: this.actor(ch), action: 'terminal.attach', targetType: 'terminal', targetId: s.id, details: { agentId: s.agentId } }),
        'audit',
      );
    }
  }

  /** A session not open here may be open on another node (its row names the node): the attach goes there. */
  private async attachElsewhere(ch: ConsoleChannel, m: ConsoleMessage<'term.attach'>): Promise<void> {
    let node = this.remote.routeOf(ch, m.sessionId);
    if (!node && this.core.nodes.enabled) {
      try {
        const row = await this.repo.get(m.sessionId);
        if (row && row.closedAt == null && row.node !== this.cfg.nodeId && this.core.nodes.nodes().includes(row.node)) node = row.node;
      } catch (err) {
        this.core.log.warn({ err, sessionId: m.sessionId }, 'could not look up a terminal session');
        return this.error(ch, 'database_unavailable', 'could not look the session up; try again', m.ref);
      }
    }
    if (!node) return this.error(ch, 'not_found', 'no such live session', m.ref);
    const url = m.direct ? this.core.nodes.nodeUrl(node) : null;
    if (url) return void ch.send({ type: 'term.elsewhere', ref: m.ref, node, url, sessionId: m.sessionId });
    if (!this.remote.forward(ch, node, m)) return this.error(ch, 'not_found', 'no such live session', m.ref);
  }

  detachRequest(ch: ConsoleChannel, sessionId: string): void {
    const node = this.elsewhere(ch, sessionId);
    if (node) return void this.remote.forward(ch, node, { type: 'term.detach', sessionId });
    const s = this.sessions.get(sessionId);
    if (s?.attachments.has(ch.id)) this.detach(s, ch.id);
  }

  private detach(s: TerminalSession, chId: number): void {
    const a = s.detach(chId);
    // The operator's console went away: the shell lives on for the detach timeout.
    if (a?.mode === 'control') this.armDetach(s);
  }

  private armDetach(s: TerminalSession): void {
    s.armDetach(this.cfg.terminalDetachTimeoutSec * 1000, () => this.close(s, 'detached for too long', null));
  }

  resize(ch: ConsoleChannel, m: ConsoleMessage<'term.resize'>): void {
    const node = this.elsewhere(ch, m.sessionId);
    if (node) return void this.remote.forward(ch, node, m);
    const s = this.sessions.get(m.sessionId);
    const a = s?.attachments.get(ch.id);
    if (!s || !a) return this.error(ch, 'not_found', `not attached to session ${m.sessionId}`);
    if (a.mode !== 'control') return this.refuse(ch, a, s.id);
    if (!s.resize(m.cols, m.rows)) return;
    this.core.fleet.send(s.agentId, { type: 'term.resize', sessionId: s.id, cols: m.cols, rows: m.rows });
  }

  closeRequest(ch: ConsoleChannel, sessionId: string): void {
    const node = this.elsewhere(ch, sessionId);
    if (node) return void this.remote.forward(ch, node, { type: 'term.close', sessionId });
    const s = this.sessions.get(sessionId);
    if (!s || !s.live) return this.error(ch, 'not_found', `no such live session ${sessionId}`);
    const a = s.attachments.get(ch.id);
    if (a?.mode === 'watch') {
      // A watcher closing its view only leaves; the operator's shell goes on.
      this.detach(s, ch.id);
      ch.send({ type: 'term.closed', sessionId: s.id, reason: 'stopped watching' });
      return;
    }
    if (s.owner.id !== ch.principal.id) return this.error(ch, 'forbidden', 'only the operator who opened the session can close it');
    this.close(s, `closed by ${ch.principal.username}`, ch);
  }

  ack(ch: ConsoleChannel, m: ConsoleMessage<'term.ack'>): void {
    const node = this.elsewhere(ch, m.sessionId);
    if (node) return void this.remote.forward(ch, node, m);
    this.sessions.get(m.sessionId)?.ack(ch.id, m.bytes);
  }

  input(ch: ConsoleChannel, sessionId: string, data: Uint8Array): void {
    const s = this.sessions.get(sessionId);
    if (!s && this.broadcasts.input(ch, sessionId, data)) return;
    const node = this.elsewhere(ch, sessionId);
    if (node) return this.remote.input(ch, node, sessionId, data);
    const a = s?.attachments.get(ch.id);
    if (!s || !a || s.state !== 'open') {
      if (!s?.live) return this.error(ch, 'not_found', `no such live session ${sessionId}`);
      return;
    }
    if (a.mode !== 'control') return this.refuse(ch, a, sessionId);
    this.core.fleet.sendBinary(s.agentId, s.input(data));
  }

  private refuse(ch: ConsoleChannel, a: Attachment, sessionId: string): void {
    const now = Date.now();
    if (now - a.refusedAt < REFUSAL_EVERY_MS) return;
    a.refusedAt = now;
    this.error(ch, 'forbidden', `session ${sessionId} is attached read-only (watch)`);
  }

  /* ---------------- agent side ---------------- */

  /** Whether this terminal session is open here, on this agent (a reply the server is owed). */
  holds(agentId: string, sessionId: string): boolean {
    return this.sessions.get(sessionId)?.agentId === agentId;
  }

  agentOpened(ctx: AgentCtx, sessionId: string, pid: number): void {
    const s = this.sessions.get(sessionId);
    if (!s || s.agentId !== ctx.agentId) {
      // Not ours (a session the server already gave up on): the agent must not keep it.
      ctx.channel.send({ type: 'term.close', sessionId, reason: 'unknown session' });
      return;
    }
    const opener = s.confirmOpen(pid);
    if (opener === false) return;
    this.core.metrics.terminalSessions.inc();
    this.track(this.repo.setPid(sessionId, pid), 'pid');
    if (opener) {
      opener.ch.send({ type: 'term.opened', ref: opener.ref, sessionId, agentId: s.agentId, mode: 'control', cols: s.cols, rows: s.rows });
      s.attach(opener.ch, 'control');
    } else {
      // The console left while the shell started: keep it for reattach like any detached one.
      this.armDetach(s);
    }
    this.core.log.info({ sessionId, agentId: s.agentId, pid }, 'terminal open');
  }

  agentExit(ctx: AgentCtx, m: { sessionId: string; exitCode: number | null; reason: string; code?: string | undefined }): void {
    const s = this.sessions.get(m.sessionId);
    if (!s || s.agentId !== ctx.agentId) return;
    const reason = s.closeReason ?? m.reason;
    this.finish(s, reason, m.exitCode, (m.code as ErrorCode | undefined) ?? 'unavailable');
  }

  agentData(ctx: AgentCtx, sessionId: string, data: Uint8Array): void {
    const s = this.sessions.get(sessionId);
    if (!s || s.agentId !== ctx.agentId || !s.live) return;
    const r = s.output(data);
    if (r === 'overrun') {
      this.core.log.warn({ sessionId, agentId: s.agentId }, 'agent ignores terminal flow control; closing the session');
      this.close(s, 'the agent ignored flow control', null);
      return;
    }
    for (const a of r) {
      s.detach(a.ch.id);
      a.ch.send({ type: 'term.closed', sessionId, reason: 'watcher fell behind' });
    }
  }

  /** The agent disconnected (or reconnected on a new socket): its shells are gone. */
  agentGone(agentId: string, reason: string): void {
    this.transfers.agentGone(agentId);
    for (const s of this.sessions.values()) {
      if (s.agentId === agentId && s.state !== 'closed') this.finish(s, reason, null, 'agent_offline');
    }
  }

  /* ---------------- ending ---------------- */

  /** Ends every live session a user owns (their rights were reduced). */
  endSessionsOf(userId: number, reason: string): void {
    for (const s of [...this.sessions.values()]) if (s.owner.id === userId && s.live) this.close(s, reason, null);
  }

  /** Asks the agent to end the shell; the session is finished when it reports the exit (or after a timeout). */
  close(s: TerminalSession, reason: string, by: ConsoleChannel | null): void {
    if (!s.live) return;
    if (s.state === 'opening') return this.finish(s, reason, null, 'unavailable', by);
    s.beginClose(reason, by, CLOSE_TIMEOUT_MS, () => this.finish(s, reason, null, 'unavailable', by));
    if (!this.core.fleet.send(s.agentId, { type: 'term.close', sessionId: s.id, reason: reason.slice(0, 255) })) {
      this.finish(s, reason, null, 'agent_offline', by);
    }
  }

  /** Records the end of a session exactly once and tells every attached console. */
  finish(s: TerminalSession, reason: string, exitCode: number | null, code: ErrorCode, closedBy?: ConsoleChannel | null): void {
    const done = s.finish();
    if (!done) return;
    const { wasOpening, opener, attachments } = done;
    const by = closedBy === undefined ? done.closedBy : closedBy;
    this.sessions.delete(s.id);
    this.broadcasts.sessionEnded(s.id);
    this.transfers.sessionEnded(s.id);
    if (opener) this.error(opener.ch, code, `terminal not opened: ${reason}`, opener.ref);
    for (const a of attachments) a.ch.send({ type: 'term.closed', sessionId: s.id, reason, exitCode });
    this.core.log.info({ sessionId: s.id, agentId: s.agentId, reason, bytesIn: s.bytesIn, bytesOut: s.received }, 'terminal closed');
    this.track(
      (async () => {
        const rec = s.recorder ? await s.recorder.close() : { bytes: 0, truncated: false };
        const closedAt = Date.now();
        await this.persist(
          () =>
            this.repo.close(s.id, {
              closedAt,
              reason,
              exitCode,
              bytesIn: s.bytesIn,
              bytesOut: s.received,
              recordingBytes: rec.bytes,
              recordingTruncated: rec.truncated,
            }),
          'session row',
          s.id,
        );
        const audit = {
          at: closedAt,
          actor: this.actor(by),
          action: 'terminal.close',
          targetType: 'terminal',
          targetId: s.id,
          ok: !wasOpening,
          details: { agentId: s.agentId, owner: s.owner.username, reason, exitCode, bytesIn: s.bytesIn, bytesOut: s.received },
        };
        await this.persist(() => this.core.audit.record(audit), 'audit', s.id);
      })(),
      'close',
    );
  }

  /** Ends every session (server shutdown) and waits for the bookkeeping. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.transfers.stop();
    for (const s of [...this.sessions.values()]) {
      if (s.state === 'open') this.core.fleet.send(s.agentId, { type: 'term.close', sessionId: s.id, reason: 'server shutdown' });
      this.finish(s, 'server shutdown', null, 'unavailable', null);
    }
    await Promise.allSettled([...this.pendingWrites]);
  }

  /** Waits for queued bookkeeping (tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.pendingWrites]);
  }
}
