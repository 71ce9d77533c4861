import type { DisconnectReason, Hello, HostPolicy, Labels, Metrics, SendOpts, ServerToAgent } from '../../protocol/index.js';
import { CloseCode } from '../../protocol/index.js';
import type { Bus, BusEvents } from '../bus/bus.js';
import type { AgentOwnership } from '../cluster/ownership.js';
import type { TxBatcher } from '../db/tx-batcher.js';
import type { Logger } from '../log.js';
import type { Metrics as PromMetrics } from '../metrics.js';
import { AgentMap } from './agent-map.js';
import { ConnectWrites, type GatherOptions } from './connect-writes.js';
import { agentView, AgentRepo, ClaimLost, ConnectionRepo, EnrollmentRefused, type AgentRecord } from './repo.js';

/** What a socket that presented an enrollment token (not an agent secret) brings to its hello. */
export interface Enrollment {
  /** Labels the enrollment token applies (kept apart, merged over the agent's own when read). */
  labels: Labels | null;
  /** Consumes one use of the enrollment token inside the claim's transaction; false when none is left. */
  consume?: (trx: import('knex').Knex.Transaction) => Promise<boolean>;
  /** Gives that use back inside the transaction that abandons an enrollment the agent never completed. */
  release?: (trx: import('knex').Knex.Transaction) => Promise<void>;
  /**
   * The agent already holds the secret (it presented it, see Fleet.connect's `reenroll`): the
   * enrollment is decided at once, never undone.
   */
  held?: boolean;
}

/** What the socket layer gives a service to reach one connected agent. */
export interface AgentChannel {
  readonly linkId: number;
  readonly remoteAddress: string | null;
  /** `json`: `msg` already serialized (the same message sent to many agents is serialized once). */
  send(msg: ServerToAgent, json?: string): boolean;
  /**
   * A frame (or one message in parts, sent as its fragments); `bulk` ones (file data) wait while the
   * socket is backed up, `key` keeps a stream's order; `opts.done` is called only if this answers true.
   */
  sendBinary(buf: Uint8Array | readonly Uint8Array[], opts?: SendOpts): boolean;
  /** Bytes queued in the socket and not yet written (for backpressure). */
  bufferedAmount(): number;
  /** Stops/restarts reading from the socket (backpressure towards the agent's TCP window). */
  pause?(): void;
  resume?(): void;
  /** True while reading is paused: the agent's heartbeats then wait unread in the socket. */
  isPaused?(): boolean;
  /** Closes the socket; `reason` is what the connection history records. */
  close(code: number, reason: string): void;
}

/** Why a connection ended, as stored in agent_connections.reason. */
export type { DisconnectReason } from '../../protocol/index.js';

interface Live {
  ch: AgentChannel;
  /**
   * The agent's record: the very object `agents` holds for as long as the agent is live (a live
   * agent's record is only ever changed in place; it is dropped or replaced only while offline),
   * so a heartbeat or a flush needs no second lookup in the fleet-sized map.
   */
  rec: AgentRecord;
  connectionId: number;
  lastHeartbeat: number;
  connectedAt: number;
  /** agents.conn_generation this connection claimed (fences writes against newer connections elsewhere). */
  generation: number;
  /** This agent's heartbeat interval when live configuration changed it (else the server's). */
  heartbeatMs?: number;
  /** When a flush last wrote this agent's last_seen_at (0: not since it connected). */
  persistedAt: number;
  /** The record's metrics object came from this connection's heartbeats (updated in place from then on). */
  ownMetrics: boolean;
  /**
   * Heard from since the last flush (a flag here, not an entry in a set cleared every flush: at
   * thousands of heartbeats a second the set's tables, regrown every flush, outlived the young
   * generation and were promoted only to die).
   */
  heard: boolean;
}

type ConnectHook = (agentId: string, hello: Hello) => void;
type DisconnectHook = (agentId: string, reason: DisconnectReason) => void;
type PolicyHook = (agentId: string, policy: HostPolicy, previous: HostPolicy | null, remoteAddress: string | null) => void;

/**
 * Presence: every agent in memory, the online set, heartbeats, and connection history.
 * Heartbeats touch memory only; last_seen_at is flushed in batches and the missed-heartbeat
 * sweep runs on a timer, so no per-heartbeat work grows with the fleet.
 */
export class Fleet {
  readonly agents = new AgentMap();
  private readonly live = new Map<string, Live>();
  /** Agents to flush that are not live here (gone offline, simulated, a failed flush): live ones carry `heard`. */
  private readonly dirty = new Set<string>();
  private readonly connectHooks: ConnectHook[] = [];
  private readonly disconnectHooks: DisconnectHook[] = [];
  private readonly policyHooks: PolicyHook[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | null = null;
  /**
   * Enrollments whose undo failed (the database was away): retried every flush interval until
   * done, so the agent, which never got its secret, can enroll again with its token.
   */
  private readonly undoPending = new Map<string, { agentId: string; secretHash: string; enroll: Enrollment; generation: number }>();
  private undoing = false;
  /**
   * Agents whose enrollment this node claimed and that have not confirmed their secret yet (no
   * message after the welcome that carried it), nor been undone: a retry with the enrollment token
   * is told to wait instead of being refused (see enrollmentInProgress).
   */
  private readonly enrolling = new Map<string, string>(); // agent id → the secret hash it was given
  /** Since when presence flushes fail (logged once when it starts and once when it ends). */
  private flushFailingSince: number | null = null;
  /** Total statements issued by presence flushes (exposed for benchmarks). */
  flushStatements = 0;
  /** Connect writes of known agents with unchanged facts, batched. */
  private readonly opens: ConnectWrites;

  constructor(
    private readonly deps: {
      repo: AgentRepo;
      connections: ConnectionRepo;
      bus: Bus;
      log: Logger;
      metrics: PromMetrics;
      /** Group commit for connect/disconnect writes. */
      writes: TxBatcher;
      nodeId: string;
      heartbeatIntervalMs: number;
      flushMs: number;
      /**
       * The stored last_seen_at of an online agent may lag its last heartbeat by this much (the
       * memory is exact; the row matters once the agent is offline, and is written exactly then).
       * 0: every flush writes every agent heard from. Default 0 here, MUSTER_PRESENCE_PERSIST_MS.
       */
      persistMs?: number;
      /** Owning node and connection generation of each agent (absent in some unit tests). */
      ownership?: AgentOwnership;
      /** How connects share their database write in a storm (MUSTER_CONNECT_WRITE_*). */
      connectGather?: GatherOptions;
    },
  ) {
    this.opens = new ConnectWrites(deps.writes, deps.nodeId, deps.ownership !== undefined, deps.connectGather);
  }

  /** Loads every agent and closes connection rows a crash left open. */
  async start(): Promise<void> {
    for (const a of await this.deps.repo.loadAll()) this.agents.set(a.id, a);
    const n = await this.deps.connections.closeDangling(this.deps.nodeId, Date.now(), 'server restart');
    if (n) this.deps.log.info({ closed: n }, 'closed connection rows left open by the previous run');
    // Agents the previous run of this node held (a crash): other nodes of a cluster still show them
    // online until told otherwise (on one node nobody listens yet).
    const released = (await this.deps.ownership?.releaseAll()) ?? [];
    const at = new Date().toISOString();
    for (const id of released) this.deps.bus.publish('agent.offline', { agentId: id, reason: 'server restart', at, name: this.agents.get(id)?.name });
    this.flushTimer = setInterval(() => {
      void this.flush();
      void this.retryUndos();
    }, this.deps.flushMs);
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(100, Math.floor(this.deps.heartbeatIntervalMs / 2)));
    this.flushTimer.unref();
    this.sweepTimer.unref();
    this.updateGauge();
  }

  /** Closes every agent socket with `server shutdown` and flushes presence. */
  async stop(): Promise<void> {
    clearInterval(this.flushTimer);
    clearInterval(this.sweepTimer);
    // Every row closed in one statement: a large fleet must not hold shutdown for one write each.
    const now = Date.now();
    const rows: number[] = [];
    const offline: string[] = [];
    for (const [id, l] of this.live) {
      offline.push(id);
      // The final flush below writes every one of them (their stored last_seen_at may lag).
      this.dirty.add(id);
      l.ch.close(CloseCode.serverShutdown, 'server shutdown');
      rows.push(l.connectionId);
      this.live.delete(id);
      const rec = this.agents.get(id);
      if (rec) {
        rec.status = 'offline';
        rec.lastSeenAt = l.lastHeartbeat;
      }
      this.deps.metrics.disconnects.inc({ reason: 'server shutdown' });
      this.deps.metrics.statusChanges.inc({ status: 'offline' });
      this.deps.metrics.connectionDuration.observe(Math.max(0, now - l.connectedAt) / 1000);
    }
    this.updateGauge();
    const at = new Date(now).toISOString();
    for (const id of offline) {
      this.deps.bus.publish('agent.offline', { agentId: id, reason: 'server shutdown', at, name: this.agents.get(id)?.name });
      for (const h of this.disconnectHooks) h(id, 'server shutdown');
    }
    await this.deps.writes.idle();
    await this.opens.idle();
    try {
      await this.deps.connections.closeMany(rows, now, 'server shutdown');
    } catch (err) {
      this.deps.log.error({ err }, 'could not record disconnections at shutdown (the next start closes them)');
    }
    try {
      await this.deps.ownership?.releaseAll();
    } catch (err) {
      this.deps.log.error({ err }, 'could not give up agent ownership at shutdown (the cluster sweep or the next start does)');
    }
    await this.flush();
  }

  /**
   * Runs when an agent has registered and its `welcome` is on the wire (see `welcomed`), so a hook
   * may send it commands at once (an agent ignores commands before its welcome).
   */
  onConnect(h: ConnectHook): void {
    this.connectHooks.push(h);
  }
  onDisconnect(h: DisconnectHook): void {
    this.disconnectHooks.push(h);
  }
  /** A host reported a policy other than the one stored (first report, a reconnect after an edit, or SIGHUP). */
  onPolicyChange(h: PolicyHook): void {
    this.policyHooks.push(h);
  }

  get(id: string): AgentRecord | undefined {
    return this.agents.get(id);
  }
  /** Whether the agent's socket is connected to this node. */
  isOnline(id: string): boolean {
    return this.live.has(id);
  }
  /** The connection generation of the agent's socket on this node (undefined: not connected here). */
  generationOf(id: string): number | undefined {
    return this.live.get(id)?.generation;
  }
  onlineCount(): number {
    return this.live.size;
  }

  /** Sends a control message to a connected agent (`json`: the message already serialized); false when it is not connected here. */
  send(agentId: string, msg: ServerToAgent, json?: string): boolean {
    const l = this.live.get(agentId);
    return l ? l.ch.send(msg, json) : false;
  }
  sendBinary(agentId: string, buf: Uint8Array | readonly Uint8Array[], opts?: SendOpts): boolean {
    const l = this.live.get(agentId);
    return l ? l.ch.sendBinary(buf, opts) : false;
  }
  bufferedAmount(agentId: string): number {
    return this.live.get(agentId)?.ch.bufferedAmount() ?? 0;
  }

  /**
   * A valid hello arrived on an authenticated socket: the agent is online. An enrolling socket
   * (`enroll`) first claims its id in the database; an id that is known (it enrolled while this
   * socket waited, or on another node) is refused with EnrollmentRefused and nothing changes.
   *
   * A socket authenticated by its secret claims the agent only while the agent's row still carries
   * that secret (the claim is the database's check of what the upgrade checked in memory). When it
   * does not, the enrollment that gave the secret was undone after the upgrade (the socket that
   * carried its welcome closed before the agent answered, on this node or another), and this socket
   * is the agent back with it: `reenroll` (the enrollment token it presented beside the secret,
   * still valid) enrolls it again with the secret it holds, so it keeps its enrollment; without
   * one it is refused (EnrollmentRefused) and nothing changes. Returns the connection generation.
   */
  async connect(ch: AgentChannel, hello: Hello, secretHash: string, enroll?: Enrollment, reenroll?: () => Promise<Enrollment | null>): Promise<number> {
    try {
      return await this.register(ch, hello, secretHash, enroll);
    } catch (err) {
      if (!(err instanceof ClaimLost) || enroll) throw err;
      const again = reenroll ? await reenroll() : null;
      if (!again) throw new EnrollmentRefused('this agent is no longer enrolled (its enrollment was not completed); enroll again with a token');
      // This node's record of the undone enrollment (the undo's removal may not have reached it yet).
      const stale = this.agents.get(hello.agentId);
      if (stale && stale.secretHash === secretHash && !this.live.has(hello.agentId)) {
        this.agents.delete(hello.agentId);
        this.dirty.delete(hello.agentId);
      }
      this.deps.log.info({ agentId: hello.agentId }, 'enrollment undone after the upgrade checked its secret: enrolled again with the secret the agent holds');
      return await this.register(ch, hello, secretHash, { ...again, held: true });
    }
  }

  private async register(ch: AgentChannel, hello: Hello, secretHash: string, enroll?: Enrollment): Promise<number> {
    const now = Date.now();
    const prevPolicy = this.agents.get(hello.agentId)?.policy ?? null;
    if (enroll) {
      // An earlier enrollment of this id that this node could not complete nor undo yet: undo it
      // now (the database is back if this claim is to succeed at all).
      for (const p of [...this.undoPending.values()])
        if (p.agentId === hello.agentId) await this.abandonEnrollment(p.agentId, p.secretHash, p.enroll, p.generation);
      if (this.agents.has(hello.agentId)) throw new EnrollmentRefused('this agent id is already enrolled');
      const enrollLabels = enroll.labels && Object.keys(enroll.labels).length ? enroll.labels : null;
      // A held secret's row starts its generations above any an earlier enrollment with that secret
      // reached (ms since the epoch): a late retry of that enrollment's undo (fenced by generation)
      // cannot delete this one.
      await this.deps.repo.claim(hello, secretHash, now, enrollLabels, enroll.consume, enroll.held ? now : 0);
      if (!enroll.held) this.enrolling.set(hello.agentId, secretHash);
      // Known meanwhile: another socket enrolled it (a record with this enrollment's own secret is
      // this row, read back by a cluster reload).
      if (this.agents.has(hello.agentId) && !(enroll.held && this.agents.get(hello.agentId)!.secretHash === secretHash)) {
        this.enrollmentConfirmed(hello.agentId, secretHash);
        throw new EnrollmentRefused('this agent id is already enrolled');
      }
      this.agents.set(hello.agentId, recordFromHello(hello, secretHash, now, enrollLabels, 'offline'));
    }
    // A socket authenticated by the secret an open enrollment gave: the agent holds it.
    if (!enroll && this.enrolling.size) this.enrollmentConfirmed(hello.agentId, secretHash);
    // A new socket replacing a live one: the agent never went offline (no status change).
    const wasLive = this.live.has(hello.agentId);
    await this.replace(hello.agentId, ch);
    let rec = this.agents.get(hello.agentId);
    const isNew = !rec;
    // A known agent reconnecting with the same facts (the common case, e.g. after a server
    // restart) costs one insert; its last_seen_at rides on the next presence flush.
    const changed = !rec || factsChanged(rec, hello);
    // Group-committed with the other hellos of this moment (a reconnect storm is thousands).
    // The common case (known agent, same facts) is written with every other such connect of the
    // moment in one operation (ConnectWrites: statements prepared once, multi-row on MySQL).
    let generation = 0;
    let connectionId: number;
    // The claim holds only while the agent's row carries the secret this socket presented (else
    // ClaimLost, nothing written): an enrollment undone since the upgrade is not silently revived.
    if (changed) {
      const ownership = this.deps.ownership;
      connectionId = await this.deps.writes.run(async (trx) => {
        if (ownership) generation = await ownership.claim(hello.agentId, trx, secretHash);
        // With ownership the claim found the row: the facts are an update, whatever memory held.
        await this.deps.repo.upsertFromHello(hello, secretHash, now, isNew && !ownership, trx);
        return this.deps.connections.open(hello.agentId, now, ch.remoteAddress, this.deps.nodeId, trx);
      }, hello.agentId);
    } else {
      ({ connectionId, generation } = await this.opens.open(hello.agentId, now, ch.remoteAddress, secretHash));
    }
    // Other nodes close an older socket of this agent (a reconnect that landed on another node).
    this.deps.ownership?.claimed(hello.agentId, generation);
    // Another socket of this agent may have registered while we were writing (two hellos racing):
    // the one that finishes registering last wins, and the other's row is closed, never orphaned.
    await this.replace(hello.agentId, ch);
    rec = this.agents.get(hello.agentId) ?? rec;
    if (!rec) {
      rec = recordFromHello(hello, secretHash, now, null, 'online');
      this.agents.set(rec.id, rec);
    } else if (!this.agents.has(rec.id)) {
      // Dropped while the claim was written (another node's undo of an earlier enrollment of this
      // id, heard meanwhile): the row this connection claimed exists.
      this.agents.set(rec.id, rec);
    }
    if (changed) {
      Object.assign(rec, {
        ...factsFromHello(hello),
        connectedAt: now,
        lastSeenAt: now,
        status: 'online',
        policy: hello.policy ?? rec.policy,
      });
    } else {
      Object.assign(rec, { connectedAt: now, lastSeenAt: now, status: 'online' });
    }
    this.live.set(hello.agentId, {
      ch,
      rec,
      connectionId,
      lastHeartbeat: now,
      connectedAt: now,
      generation,
      persistedAt: changed ? now : 0,
      ownMetrics: false,
      // Unchanged facts: the connect wrote no last_seen_at, the next flush does.
      heard: !changed,
    });
    this.deps.metrics.connects.inc();
    if (!wasLive) this.deps.metrics.statusChanges.inc({ status: 'online' });
    this.updateGauge();
    this.deps.log.info({ agentId: rec.id, name: rec.name, remote: ch.remoteAddress, new: isNew }, 'agent online');
    this.deps.bus.publish('agent.online', { agent: agentView(rec) });
    if (hello.policy && JSON.stringify(prevPolicy) !== JSON.stringify(hello.policy)) {
      for (const h of this.policyHooks) h(rec.id, hello.policy, prevPolicy, ch.remoteAddress);
    }
    return generation;
  }

  /**
   * An enrollment of `agentId` that this node claimed is still open: the agent has not confirmed its
   * secret yet (see AgentLink), or its undo has not completed. A retry with the enrollment token
   * meanwhile is asked to wait (503), not refused as an agent without its secret (401).
   */
  enrollmentInProgress(agentId: string): boolean {
    return this.enrolling.has(agentId);
  }

  /**
   * The enrollment that gave `agentId` the secret `secretHash` is decided: the agent spoke after the
   * welcome that carried it, or came back with it, or the enrollment was undone.
   */
  enrollmentConfirmed(agentId: string, secretHash: string): void {
    if (this.enrolling.get(agentId) === secretHash) this.enrolling.delete(agentId);
  }

  /**
   * The link has sent `welcome` on the channel `connect` registered: runs the connect hooks, unless
   * another socket of the agent took over (or it went offline) meanwhile.
   */
  welcomed(ch: AgentChannel, hello: Hello): void {
    if (this.live.get(hello.agentId)?.ch !== ch) return;
    for (const h of this.connectHooks) {
      try {
        h(hello.agentId, hello);
      } catch (err) {
        this.deps.log.error({ err, agentId: hello.agentId }, 'connect hook failed');
      }
    }
  }

  /**
   * Undoes the claim of an enrollment whose agent never received its secret (the registration
   * failed, or the socket closed before `welcome`): the row is deleted and the token's use given
   * back in one transaction, and the in-memory record dropped, so the agent's retry with the same
   * token enrolls afresh instead of meeting 401 forever. Only the claim made with `secretHash` is
   * undone (a no-op when the claim never happened). The caller has already ended the link.
   */
  async abandonEnrollment(agentId: string, secretHash: string, enroll: Enrollment, generation = 0): Promise<boolean> {
    const rec = this.agents.get(agentId);
    // Someone holds the agent (with this secret: it came back with it), or it enrolled again since.
    if (this.live.has(agentId) || (rec && rec.secretHash !== secretHash)) {
      this.enrollmentConfirmed(agentId, secretHash);
      return false;
    }
    let removed: boolean;
    try {
      removed = await this.deps.repo.unclaim(agentId, secretHash, enroll.release, generation);
    } catch (err) {
      // Whether the claim committed is unknown (its commit may have failed the same way): the
      // undo is retried (retryUndos) until the database answers.
      this.undoPending.set(`${agentId} ${secretHash}`, { agentId, secretHash, enroll, generation });
      throw err;
    }
    this.undoPending.delete(`${agentId} ${secretHash}`);
    this.enrollmentConfirmed(agentId, secretHash);
    const cur = this.agents.get(agentId);
    if (removed && cur && cur.secretHash === secretHash && !this.live.has(agentId)) {
      this.agents.delete(agentId);
      this.dirty.delete(agentId);
      this.updateGauge();
      this.deps.bus.publish('agent.removed', { agentId });
    }
    return removed;
  }

  /** Enrollment undos still to do (see abandonEnrollment). */
  pendingUndos(): number {
    return this.undoPending.size;
  }

  /** Retries the undo of every enrollment whose undo failed (on the flush timer). */
  async retryUndos(): Promise<void> {
    if (this.undoing || this.undoPending.size === 0) return;
    this.undoing = true;
    try {
      for (const [key, p] of [...this.undoPending]) {
        try {
          const undone = await this.abandonEnrollment(p.agentId, p.secretHash, p.enroll, p.generation);
          this.undoPending.delete(key);
          this.deps.log.info({ agentId: p.agentId, undone }, 'incomplete enrollment undone: the agent can enroll again');
        } catch {
          break; // the database is still away: next interval
        }
      }
    } finally {
      this.undoing = false;
    }
  }

  /** Closes the live socket of `agentId` unless it is `ch`, recording `replaced`. */
  private async replace(agentId: string, ch: AgentChannel): Promise<void> {
    const prev = this.live.get(agentId);
    if (prev && prev.ch.linkId !== ch.linkId) {
      prev.ch.close(CloseCode.replaced, 'replaced');
      await this.disconnect(agentId, prev.ch.linkId, 'replaced');
    }
  }

  /** Heartbeat: memory only; the flush timer persists and publishes in batches. */
  heartbeat(agentId: string, linkId: number, metrics: Metrics): void {
    const l = this.live.get(agentId);
    if (!l || l.ch.linkId !== linkId) return;
    const rec = l.rec;
    const now = Date.now();
    l.lastHeartbeat = now;
    rec.lastSeenAt = now;
    // Into the record's own object (an AgentMetrics, made by the connection's first heartbeat;
    // whatever object the record held before is replaced, not written to): the message dies young,
    // and the numbers are written into the object's own double fields, so a heartbeat allocates
    // nothing that outlives it.
    if (l.ownMetrics && rec.metrics instanceof AgentMetrics) rec.metrics.set(metrics);
    else {
      rec.metrics = new AgentMetrics(metrics);
      l.ownMetrics = true;
    }
    l.heard = true;
    this.deps.metrics.countHeartbeat();
  }

  /**
   * Bench only (MUSTER_BENCH_SIMULATED_PRESENCE; see bench-presence.ts): presence of a known agent
   * that has no socket, in memory, through the same bus events and presence flush as a real one.
   */
  simulate(agentId: string, change: { online?: boolean; metrics?: Metrics }): void {
    const rec = this.agents.get(agentId);
    if (!rec || this.live.has(agentId)) return;
    const now = Date.now();
    if (change.metrics) {
      rec.metrics = change.metrics;
      rec.lastSeenAt = now;
      this.dirty.add(agentId);
    }
    if (change.online === true && rec.status !== 'online') {
      Object.assign(rec, { status: 'online', connectedAt: now, lastSeenAt: now });
      this.deps.bus.publish('agent.online', { agent: agentView(rec) });
    } else if (change.online === false && rec.status !== 'offline') {
      rec.status = 'offline';
      this.deps.bus.publish('agent.offline', { agentId, reason: 'connection lost', at: new Date(now).toISOString(), name: rec.name });
    }
  }

  /**
   * Traffic other than heartbeats (execution output) also proves the agent alive: an agent whose
   * heartbeat waits behind megabytes of output in its socket is not dead.
   */
  touch(agentId: string, linkId: number): void {
    const l = this.live.get(agentId);
    if (l && l.ch.linkId === linkId) l.lastHeartbeat = Date.now();
  }

  /** The agent's config labels changed (SIGHUP). */
  async setReportedLabels(agentId: string, labels: Labels): Promise<void> {
    const rec = this.agents.get(agentId);
    if (!rec) return;
    rec.labels = labels;
    await this.deps.repo.updateLabels(agentId, labels);
    this.deps.bus.publish('agent.changed', { agent: agentView(rec) });
  }

  /** The host's policy changed (SIGHUP on the agent). */
  async setReportedPolicy(agentId: string, policy: HostPolicy): Promise<void> {
    const rec = this.agents.get(agentId);
    if (!rec) return;
    const prev = rec.policy;
    if (JSON.stringify(prev) === JSON.stringify(policy)) return;
    rec.policy = policy;
    await this.deps.repo.updatePolicy(agentId, policy);
    this.deps.bus.publish('agent.changed', { agent: agentView(rec) });
    for (const h of this.policyHooks) h(agentId, policy, prev, this.live.get(agentId)?.ch.remoteAddress ?? null);
  }

  /** A socket closed. Only the current link of an agent marks it offline (a replaced one does not). */
  async disconnect(agentId: string, linkId: number, why: DisconnectReason): Promise<void> {
    const l = this.live.get(agentId);
    if (!l || l.ch.linkId !== linkId) return;
    this.live.delete(agentId);
    // Its last_seen_at is written below, exactly (a flush would write the flush's time).
    this.dirty.delete(agentId);
    const now = Date.now();
    const rec = this.agents.get(agentId);
    // A newer connection of this agent is on another node: it did not go offline (like `replaced`),
    // and its record keeps the status the other node's events give it.
    const elsewhere = this.deps.ownership?.newerElsewhere(agentId, l.generation) ?? false;
    const reason: DisconnectReason = elsewhere ? 'replaced' : why;
    if (rec && !elsewhere) {
      rec.status = 'offline';
      rec.lastSeenAt = l.lastHeartbeat;
    }
    this.deps.metrics.disconnects.inc({ reason });
    this.deps.metrics.connectionDuration.observe(Math.max(0, now - l.connectedAt) / 1000);
    // A replaced socket is followed by the new one at once: the agent never was offline.
    if (reason !== 'replaced') this.deps.metrics.statusChanges.inc({ status: 'offline' });
    this.updateGauge();
    this.deps.log.info({ agentId, reason }, 'agent offline');
    try {
      await this.deps.writes.run(async (trx) => {
        await this.deps.connections.close(l.connectionId, now, reason, trx);
        // The flushes may have left the stored last_seen_at behind (persistMs): the offline row is exact.
        await this.deps.repo.touchMany([agentId], l.lastHeartbeat, this.deps.ownership?.fenceNode ?? null, 30_000, trx);
        await this.deps.ownership?.release(agentId, l.generation, trx);
      }, agentId);
    } catch (err) {
      this.deps.log.error({ err, agentId }, 'could not record disconnection');
    }
    if (reason !== 'replaced') {
      this.deps.bus.publish('agent.offline', { agentId, reason, at: new Date(now).toISOString(), ...(rec ? { name: rec.name } : {}) });
      for (const h of this.disconnectHooks) h(agentId, reason);
    }
  }

  /** The heartbeat interval an agent was configured with (null: the server's default); the sweep allows three of them. */
  setHeartbeatInterval(agentId: string, ms: number | null): void {
    const l = this.live.get(agentId);
    if (!l) return;
    if (ms === null) delete l.heartbeatMs;
    else l.heartbeatMs = ms;
  }

  heartbeatIntervalOf(agentId: string): number {
    return this.live.get(agentId)?.heartbeatMs ?? this.deps.heartbeatIntervalMs;
  }

  /** Closes an agent's socket for `reason` (revoke, restart). */
  kick(agentId: string, code: number, reason: DisconnectReason): boolean {
    const l = this.live.get(agentId);
    if (!l) return false;
    l.ch.close(code, reason);
    void this.disconnect(agentId, l.ch.linkId, reason);
    return true;
  }

  /**
   * Closes every agent socket of this node (close 1001: agents reconnect, to another node when they
   * know several). Cluster: this node lost NATS for longer than a lease TTL, so the others have
   * already given its agents up; keeping the sockets would leave them shown offline everywhere.
   */
  kickAll(reason: DisconnectReason): number {
    let n = 0;
    for (const id of [...this.live.keys()]) if (this.kick(id, CloseCode.serverShutdown, reason)) n++;
    return n;
  }

  /**
   * Pushes the metrics of every agent heard from since the last flush, and persists last_seen_at
   * of those whose stored value is older than `persistMs` (and of every agent no longer online).
   */
  async flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    const now = Date.now();
    const persistMs = this.deps.persistMs ?? 0;
    const items: BusEvents['agent.metrics']['items'] = [];
    const ids: string[] = [];
    const written: Live[] = [];
    const iso = isoCache();
    const take = (id: string, l: Live | undefined) => {
      const rec = l ? l.rec : this.agents.get(id);
      if (rec?.metrics) items.push({ agentId: id, metrics: rec.metrics, lastSeenAt: iso(rec.lastSeenAt ?? now) });
      if (l && now - l.persistedAt < persistMs) return;
      ids.push(id);
      if (l) written.push(l);
    };
    let taken = 0;
    for (const id of this.dirty) {
      const l = this.live.get(id);
      // A live agent is in `dirty` only after a failed flush: taken once, here.
      if (l) l.heard = false;
      take(id, l);
      taken++;
    }
    this.dirty.clear();
    for (const [id, l] of this.live) {
      if (!l.heard) continue;
      l.heard = false;
      take(id, l);
      taken++;
    }
    if (taken === 0) return;
    this.deps.bus.publish('agent.metrics', { items });
    if (ids.length === 0) return;
    this.flushing = (async () => {
      try {
        const n = await this.deps.repo.touchMany(ids, now, this.deps.ownership?.fenceNode ?? null);
        for (const l of written) l.persistedAt = now;
        this.flushStatements += n;
        this.deps.metrics.dbFlushes.inc(n);
        this.deps.metrics.dbFlushRows.inc(ids.length);
        if (this.flushFailingSince !== null) {
          this.deps.log.info({ downMs: Date.now() - this.flushFailingSince }, 'presence flushes recovered');
          this.flushFailingSince = null;
        }
      } catch (err) {
        // Database away (restart): keep the ids for the next flush; nothing is lost but precision.
        for (const id of ids) this.dirty.add(id);
        if (this.flushFailingSince === null) {
          this.flushFailingSince = Date.now();
          this.deps.log.warn({ err }, 'presence flushes failing; retrying every flush interval');
        }
      } finally {
        this.flushing = null;
      }
    })();
    return this.flushing;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, l] of this.live) {
      const deadline = now - 3 * (l.heartbeatMs ?? this.deps.heartbeatIntervalMs);
      // A socket the server stopped reading (backpressure) is not a dead agent: its heartbeats wait
      // in the socket. The pause counts as heard-from; the timeout starts again when reading does.
      if (l.ch.isPaused?.()) {
        l.lastHeartbeat = now;
        continue;
      }
      if (l.lastHeartbeat < deadline) {
        l.ch.close(CloseCode.heartbeatTimeout, 'heartbeat timeout');
        void this.disconnect(id, l.ch.linkId, 'heartbeat timeout');
      }
    }
  }

  private updateGauge(): void {
    this.deps.metrics.agents.set({ status: 'online' }, this.live.size);
    this.deps.metrics.agents.set({ status: 'offline' }, this.agents.size - this.live.size);
  }
}

/**
 * The metrics a record holds for a connected agent, written in place by every heartbeat. A class,
 * so every record's object has one shape whose number fields V8 keeps as doubles inside the
 * object: copying a heartbeat into it allocates nothing (into an object parsed from JSON, each
 * number stored was a new heap number, promoted with the record, and the stores went through
 * slow paths). Serializes like the plain object (same keys, same order).
 */
export class AgentMetrics implements Metrics {
  cpuPercent: number;
  memUsedBytes: number;
  memTotalBytes: number;
  load: [number, number, number];
  diskUsedBytes: number;
  diskTotalBytes: number;
  uptimeSec: number;
  runningExecutions: number;
  openTerminals: number;
  constructor(m: Metrics) {
    this.cpuPercent = m.cpuPercent;
    this.memUsedBytes = m.memUsedBytes;
    this.memTotalBytes = m.memTotalBytes;
    this.load = [m.load[0], m.load[1], m.load[2]];
    this.diskUsedBytes = m.diskUsedBytes;
    this.diskTotalBytes = m.diskTotalBytes;
    this.uptimeSec = m.uptimeSec;
    this.runningExecutions = m.runningExecutions;
    this.openTerminals = m.openTerminals;
  }
  set(m: Metrics): void {
    this.cpuPercent = m.cpuPercent;
    this.memUsedBytes = m.memUsedBytes;
    this.memTotalBytes = m.memTotalBytes;
    this.load[0] = m.load[0];
    this.load[1] = m.load[1];
    this.load[2] = m.load[2];
    this.diskUsedBytes = m.diskUsedBytes;
    this.diskTotalBytes = m.diskTotalBytes;
    this.uptimeSec = m.uptimeSec;
    this.runningExecutions = m.runningExecutions;
    this.openTerminals = m.openTerminals;
  }
}

const MS3 = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/**
 * `new Date(t).toISOString()` for the timestamps of one flush (a few seconds of heartbeats): the
 * text up to the second is made once per distinct second, the milliseconds appended.
 */
export function isoCache(): (t: number) => string {
  let sec = NaN;
  let prefix = '';
  return (t) => {
    const s = Math.floor(t / 1000);
    if (s !== sec) {
      const full = new Date(t).toISOString();
      // Years 0–9999 only ("YYYY-MM-DDTHH:MM:SS.mmmZ"); anything else is formatted whole.
      if (full.length !== 24) return full;
      sec = s;
      prefix = full.slice(0, 20);
    }
    return `${prefix}${MS3[t - s * 1000]!}Z`;
  };
}

/** The host facts a hello reports, as the record holds them. */
function factsFromHello(hello: Hello) {
  return {
    name: hello.name,
    hostname: hello.hostname,
    ips: hello.ips,
    externalIp: hello.externalIp ?? null,
    platform: hello.platform,
    arch: hello.arch,
    os: hello.os,
    version: hello.agentVersion,
    cpus: hello.cpus,
    memoryBytes: hello.memoryBytes,
    labels: hello.labels,
  };
}

/** A new agent's record, from its first hello. */
function recordFromHello(hello: Hello, secretHash: string, now: number, enrollLabels: Labels | null, status: AgentRecord['status']): AgentRecord {
  return {
    id: hello.agentId,
    ...factsFromHello(hello),
    labelOverrides: null,
    enrollLabels,
    groups: [],
    secretHash,
    createdAt: now,
    connectedAt: now,
    lastSeenAt: now,
    revokedAt: null,
    status,
    metrics: null,
    policy: hello.policy ?? null,
  };
}

/** Whether a hello reports different host facts than the record holds (so the row needs an update). */
function factsChanged(r: AgentRecord, h: Hello): boolean {
  return (
    r.name !== h.name ||
    r.hostname !== h.hostname ||
    r.externalIp !== (h.externalIp ?? null) ||
    r.platform !== h.platform ||
    r.arch !== h.arch ||
    r.os !== h.os ||
    r.version !== h.agentVersion ||
    r.cpus !== h.cpus ||
    r.memoryBytes !== h.memoryBytes ||
    JSON.stringify(r.ips) !== JSON.stringify(h.ips) ||
    JSON.stringify(r.labels) !== JSON.stringify(h.labels) ||
    (h.policy !== undefined && JSON.stringify(r.policy) !== JSON.stringify(h.policy))
  );
}
