import { randomUUID } from 'node:crypto';
import type { AgentMessage, DistributionTargetState, DistributionView, ServerMessage } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import type { Bus } from '../bus/bus.js';
import type { Leases } from '../cluster/lease.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/repo.js';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../log.js';
import { gateView, WaveEngine, type Live, type WaveDriver } from '../waves/engine.js';
import { LeasedWaves, WAVE_CALL_TIMEOUT_MS } from '../waves/leased.js';
import type { WaveSpec } from '../waves/plan.js';
import type { ContentStore } from './content.js';
import type { DistributionRow, FileRow, FileRepo, RevisionRow, TargetRow } from './repo.js';
import type { TransferManager } from './transfer.js';

const TERMINAL: ReadonlySet<DistributionTargetState> = new Set(['applied', 'unchanged', 'removed', 'failed', 'skipped']);
const FAILED: ReadonlySet<DistributionTargetState> = new Set(['failed']);
const DONE: ReadonlySet<DistributionTargetState> = new Set(['applied', 'unchanged', 'removed']);

export interface NewDistribution {
  file: FileRow;
  revision: RevisionRow | null; // null for kind 'remove'
  kind: 'apply' | 'remove';
  selector: string;
  waves: WaveSpec[];
  maxFailures: number;
  soakSeconds?: number;
  approval?: boolean;
  actor: Actor;
}

/** What a distribution keeps beside its row and targets. */
interface Extra {
  file: FileRow;
  revision: RevisionRow | null;
  /** transferId → agentId of the command in flight for each target. */
  inflight: Map<string, string>;
  /** Transfers in flight to agents of other nodes: the node relaying it, and its last progress. */
  remote: Map<string, { node: string; progressAt: number }>;
  actor: Actor;
}

/** What goes to an agent: `file.apply` (its content streamed after it) or `file.remove`. */
type FileCommand = ServerMessage<'file.apply'> | ServerMessage<'file.remove'>;

/*
 * Node-addressed kinds (server/cluster/node-link.ts) of distributions across nodes (issue 12). The
 * node driving distributions (the `waves` lease holder) hands a command for an agent of another
 * node to that node (APPLY), which streams the content to its agent (FILE_DATA, flow control, as for
 * its own agents) and relays what comes back: progress (PROGRESS, throttled), the agent leaving
 * (GONE), the result (RESULT, to the current lease holder, until it is recorded).
 */
/** Holder → agent's node (request): send this command to your agent; answers ApplyAnswer. */
const APPLY = 'files.apply';
/** Holder → agent's node: a relayed transfer ended there (cancelled, timed out, lease lost). */
const END = 'files.end';
/** Agent's node → holder (request): an agent's `file.result`; answers true once recorded. */
const RESULT = 'files.result';
/** Agent's node → holder: a relayed transfer made progress (acks). */
const PROGRESS = 'files.progress';
/** Agent's node → holder: the agent of a relayed transfer disconnected. */
const GONE = 'files.gone';
/** Agent's node → every node: an agent connected here (the holder sends what waits for it). */
const HELLO = 'files.hello';
/** A relayed transfer reports progress to the holder at most this often. */
const PROGRESS_EVERY_MS = 2000;
/** A relayed result that no lease holder recorded is offered again after this delay. */
const RESULT_RETRY_MS = 1000;

type ApplyAnswer = { ok: true } | { ok: false; offline: string } | { ok: false; failed: string };

/** A command this node streams to its agent for the node driving distributions. */
interface Relay {
  agentId: string;
  fileId: string;
  /** The node that sent it (progress and departures go back there). */
  from: string;
  reportedAt: number;
}
type DistLive = Live<DistributionRow, TargetRow, Extra>;

export interface EngineDeps {
  repo: FileRepo;
  content: ContentStore;
  transfers: TransferManager;
  fleet: Fleet;
  /** The `waves` lease: only its holder drives distributions (always held on one node). */
  leases: Leases;
  link: NodeLink;
  /** The node holding an agent's socket (null: none known). */
  agentNode(agentId: string): string | null;
  bus: Bus;
  log: Logger;
  /** A target that makes no progress for this long fails (offline agent, stalled transfer). */
  applyTimeoutSec: number;
  /** Runs a file's post-apply command on one host; answers the task id. */
  runPostCommand(command: string, agentId: string, actor: Actor, file: FileRow): Promise<string | null>;
  tickMs?: number;
  /** Retry of writes while the database is away (MUSTER_DB_RETRY_INITIAL_MS, MUSTER_DB_RETRY_MAX_MS). */
  retry?: { initialMs: number; maxMs: number };
}

/**
 * Drives file distributions on the wave engine (server/waves/engine.ts): sends `file.apply` (or
 * `file.remove`) to each wave's agents, streams content through the TransferManager, follows
 * their `file.result`. Agents that drop mid-transfer get the command again when they return (the
 * agent compares hashes first, so a repeat costs nothing). Changes are published on the bus as
 * `distribution.updated`. In a cluster the `waves` lease holder drives them and every node relays
 * commands, content and results for its own agents (APPLY … HELLO above).
 */
export class DistributionEngine {
  /** The runs under the `waves` lease: pause, resume, approve, cancel and view go straight to it. */
  readonly runs: LeasedWaves<DistributionRow, TargetRow, Extra, DistributionView, NewDistribution>;
  private readonly waves: WaveEngine<DistributionRow, TargetRow, Extra, DistributionView>;
  /** transferId → distribution id. */
  private readonly byTransfer = new Map<string, string>();
  /** Commands this node streams to its agents for the node driving distributions, by transfer id. */
  private readonly relays = new Map<string, Relay>();
  private stopped = false;
  private readonly unsubs: (() => void)[] = [];

  constructor(private readonly d: EngineDeps) {
    const { repo, fleet, bus, transfers } = d;
    const driver: WaveDriver<DistributionRow, TargetRow, Extra> = {
      noun: 'distribution',
      terminal: TERMINAL,
      failed: FAILED,
      done: DONE,
      pending: 'pending',
      skipped: 'skipped',
      store: repo.distributions,
      restore: async (row, targets) => {
        const file = await repo.getFile(row.fileId, true);
        const revision = row.kind === 'apply' ? await repo.getRevision(row.fileId, row.revision) : null;
        if (!file || (row.kind === 'apply' && !revision)) return null;
        // Nothing is in flight after a restart: what was being sent is sent again.
        for (const t of targets.values()) if (t.state === 'sending') t.state = 'pending';
        return { file, revision, inflight: new Map(), remote: new Map(), actor: { username: row.createdBy, role: null, ip: null } };
      },
      target: (row, a, wave, skipReason, now) => ({
        distributionId: row.id,
        agentId: a.id,
        agentName: a.name,
        wave,
        state: skipReason ? 'skipped' : 'pending',
        reason: skipReason,
        postTaskId: null,
        startedAt: null,
        updatedAt: now,
      }),
      send: (l, t) => this.send(l, t),
      cancelling: (l) => {
        for (const [transferId] of l.x.inflight) this.endTransfer(l, transferId);
      },
      // Targets of the current wave that were held back while paused go out now.
      resumed: (l) => {
        for (const t of l.targets.values()) if (t.wave === l.row.currentWave && this.waiting(t)) this.send(l, t);
      },
      tick: (l, now) => {
        if (l.row.state !== 'running') return;
        const limit = d.applyTimeoutSec * 1000;
        // agentId → its transfer, built once per tick (a scan per target was quadratic in the wave's size).
        const transferOf = new Map<string, string>();
        for (const [transferId, agentId] of l.x.inflight) transferOf.set(agentId, transferId);
        for (const t of l.targets.values()) {
          if (t.startedAt == null || TERMINAL.has(t.state)) continue;
          const transferId = transferOf.get(t.agentId);
          const progress = Math.max(
            t.startedAt,
            transferId ? (transfers.lastProgress(transferId) ?? l.x.remote.get(transferId)?.progressAt ?? 0) : 0,
            t.updatedAt,
          );
          if (now - progress > limit) {
            if (transferId) this.endTransfer(l, transferId);
            const online = fleet.isOnline(t.agentId);
            this.waves.setTarget(l, t, 'failed', online ? `no progress for ${d.applyTimeoutSec} s` : `agent offline for ${d.applyTimeoutSec} s`);
          }
        }
      },
      publish: (row) => bus.publish('distribution.updated', { distributionId: row.id, fileId: row.fileId }),
      view: distributionView,
    };
    this.runs = new LeasedWaves<DistributionRow, TargetRow, Extra, DistributionView, NewDistribution>(driver, {
      leases: d.leases,
      link: d.link,
      log: d.log,
      kind: 'waves.distribution',
      tickMs: d.tickMs,
      retry: d.retry,
      agents: (ids) => ids.map((id) => fleet.get(id)).filter((x): x is AgentRecord => x !== undefined),
      createHere: (input, candidates) => this.createHere(input, candidates),
      // A new holder: what waits for agents connected anywhere goes out now (restored 'sending' targets are pending again).
      restored: () => {
        for (const l of this.waves.runs()) if (l.row.state === 'running') for (const t of l.targets.values()) if (this.waiting(t)) this.send(l, t);
      },
      suspending: () => {
        for (const l of this.waves.runs()) for (const [transferId] of l.x.inflight) this.endTransfer(l, transferId);
      },
    });
    this.waves = this.runs.engine;
  }

  async start(): Promise<void> {
    const { link, fleet } = this.d;
    const h = (kind: string, fn: (meta: never, from: string) => unknown) => this.unsubs.push(link.handle(kind, (m, _data, from) => fn(m as never, from)));
    h(APPLY, (m: { a: string; c: FileCommand }, from) => this.relay(m.a, m.c, from));
    h(END, (m: { t: string }) => this.endRelay(m.t));
    h(RESULT, async (m: { a: string; m: AgentMessage<'file.result'> }) => {
      if (!this.runs.holds()) throw new Error(`node ${link.nodeId} does not drive distributions now`);
      await this.record(m.a, m.m);
      return true;
    });
    h(PROGRESS, (m: { t: string }) => {
      const id = this.byTransfer.get(m.t);
      const r = id ? this.waves.get(id)?.x.remote.get(m.t) : undefined;
      if (r) r.progressAt = Date.now();
    });
    h(GONE, (m: { t: string; a: string }) => {
      const l = this.byTransferLive(m.t, m.a);
      if (l) this.lost(l, m.t, m.a);
    });
    h(HELLO, (m: { a: string }, from) => {
      if (!fleet.isOnline(m.a)) this.onConnect(m.a, from);
    });
    // Connect hooks run once the welcome is written: a waiting transfer may start at once.
    fleet.onConnect((agentId) => {
      this.onConnect(agentId, link.nodeId);
      link.broadcast(HELLO, { a: agentId });
    });
    fleet.onDisconnect((agentId) => this.onDisconnect(agentId));
    await this.runs.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const u of this.unsubs.splice(0)) u();
    await this.runs.stop();
    await this.d.transfers.close();
    await this.waves.flushed();
  }

  /** Whether a running distribution holds this transfer for this agent (its replies skip the message rate). */
  holds(agentId: string, transferId: string): boolean {
    const id = this.byTransfer.get(transferId);
    return Boolean(id && this.waves.get(id)?.x.inflight.get(transferId) === agentId) || this.relays.get(transferId)?.agentId === agentId;
  }

  /** The distribution of a file that is active (running, paused, soaking, awaiting approval), if any (another node's: from the database). */
  activeFor(fileId: string): Promise<DistributionRow | null> {
    return this.runs.activeWhere((r) => r.fileId === fileId);
  }

  /** Creates a distribution on the node driving them. */
  create(input: NewDistribution, candidates: AgentRecord[]): Promise<DistributionRow> {
    return this.runs.create(input, candidates);
  }

  private async createHere(input: NewDistribution, candidates: AgentRecord[]): Promise<DistributionRow> {
    const active = await this.activeFor(input.file.id);
    if (active)
      throw new ApiError('conflict', `distribution ${active.id} of this file is ${active.state}; cancel it or let it finish first`, 409, {
        distributionId: active.id,
      });
    const now = Date.now();
    const row: DistributionRow = {
      id: randomUUID(),
      fileId: input.file.id,
      revision: input.revision?.revision ?? input.file.latestRevision,
      kind: input.kind,
      selector: input.selector,
      waveSpec: input.waves,
      maxFailures: input.maxFailures,
      state: 'running',
      reason: null,
      currentWave: 0,
      failureBase: 0,
      soakSeconds: input.soakSeconds ?? 0,
      approval: input.approval ?? false,
      waveDoneAt: null,
      createdBy: input.actor.username,
      createdAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    const extra: Extra = { file: input.file, revision: input.revision, inflight: new Map(), remote: new Map(), actor: input.actor };
    const { sizes } = await this.waves.create(row, extra, candidates);
    this.d.log.info({ distributionId: row.id, fileId: row.fileId, revision: row.revision, kind: row.kind, waves: sizes }, 'file distribution created');
    return row;
  }

  /** `file.result` from an agent connected here: recorded here, or relayed to the node driving distributions. */
  async result(agentId: string, m: AgentMessage<'file.result'>): Promise<void> {
    const relay = this.relays.get(m.transferId);
    if (relay?.agentId === agentId) {
      this.endRelay(m.transferId);
      return this.forward(agentId, m);
    }
    return this.record(agentId, m);
  }

  /**
   * Hands a relayed result to the current `waves` lease holder (this node, or another), offered
   * again until one records it (the lease may be changing hands) or the apply timeout has passed.
   */
  private async forward(agentId: string, m: AgentMessage<'file.result'>): Promise<void> {
    const { leases, link, log } = this.d;
    const until = Date.now() + this.d.applyTimeoutSec * 1000;
    for (;;) {
      let why: string;
      try {
        if (this.runs.holds()) return await this.record(agentId, m);
        const holder = await leases.holder('waves');
        if (holder != null && holder !== link.nodeId && (await link.request(holder, RESULT, { a: agentId, m }, undefined, WAVE_CALL_TIMEOUT_MS)) === true)
          return;
        why = holder == null ? 'no node holds the waves lease' : `node ${holder} did not record it`;
      } catch (err) {
        why = (err as Error).message;
      }
      if (Date.now() > until || this.stopped) {
        log.warn({ agentId, transferId: m.transferId, why }, 'a file result could not be handed to the node driving distributions; dropped');
        return;
      }
      await new Promise((r) => setTimeout(r, RESULT_RETRY_MS).unref());
    }
  }

  /** Records an agent's `file.result` (this node drives distributions). */
  private async record(agentId: string, m: AgentMessage<'file.result'>): Promise<void> {
    const l = this.byTransferLive(m.transferId, agentId);
    if (!l) return;
    this.endTransfer(l, m.transferId);
    const t = l.targets.get(agentId);
    if (!t || TERMINAL.has(t.state)) return;
    const now = Date.now();
    if (m.state === 'failed') {
      this.waves.setTarget(l, t, 'failed', m.code ? `${m.code}: ${m.reason ?? ''}` : (m.reason ?? 'failed'));
    } else if (m.state === 'removed') {
      this.waves.write(() => this.d.repo.removeHost(l.row.fileId, agentId));
      this.waves.setTarget(l, t, 'removed', null);
    } else {
      const rev = l.x.revision!;
      this.waves.write(() =>
        this.d.repo.upsertHost({ fileId: l.row.fileId, agentId, revision: rev.revision, sha256: rev.sha256, state: 'ok', reason: null, updatedAt: now }),
      );
      let reason = m.state === 'applied' && !m.contentChanged ? 'owner or mode corrected; content unchanged' : null;
      // The post-apply task is started before the target is marked done: the target's result and its
      // task id are stored and published in one step, so a distribution seen done names every task.
      if (m.state === 'applied' && m.contentChanged && l.x.file.postCommand) {
        try {
          t.postTaskId = await this.d.runPostCommand(l.x.file.postCommand, agentId, l.x.actor, l.x.file);
        } catch (err) {
          reason = `post-apply command not started: ${(err as Error).message}`.slice(0, 2048);
        }
      }
      if (TERMINAL.has(t.state))
        this.waves.touch(l, t); // ended meanwhile (cancelled, timed out): keep the task id
      else this.waves.setTarget(l, t, m.state, reason);
    }
    this.waves.advance(l);
  }

  /** `file.ack`: flow control, handed to the transfer manager. */
  ack(agentId: string, m: AgentMessage<'file.ack'>): void {
    if (this.byTransferLive(m.transferId, agentId)) {
      this.d.transfers.ack(agentId, m.transferId, m.offset);
      return;
    }
    const r = this.relays.get(m.transferId);
    if (r?.agentId !== agentId) return;
    this.d.transfers.ack(agentId, m.transferId, m.offset);
    const now = Date.now();
    if (now - r.reportedAt >= PROGRESS_EVERY_MS) {
      r.reportedAt = now;
      this.d.link.send(r.from, PROGRESS, { t: m.transferId });
    }
  }

  /** A transfer could not read its content (the file vanished from the data dir). */
  transferFailed(transferId: string, err: unknown): void {
    const r = this.relays.get(transferId);
    if (r) {
      this.endRelay(transferId);
      const reason = `server node ${this.d.link.nodeId} could not read the revision content: ${(err as Error).message}`.slice(0, 2048);
      void this.forward(r.agentId, { type: 'file.result', transferId, state: 'failed', reason });
      return;
    }
    const id = this.byTransfer.get(transferId);
    const l = id ? this.waves.get(id) : undefined;
    const agentId = l?.x.inflight.get(transferId);
    if (!l || !agentId) return;
    this.endTransfer(l, transferId);
    const t = l.targets.get(agentId);
    if (t) this.waves.setTarget(l, t, 'failed', `server could not read the revision content: ${(err as Error).message}`);
    this.waves.advance(l);
  }

  async list(fileId: string, limit: number, offset: number): Promise<{ items: DistributionView[]; total: number }> {
    return this.runs.views(await this.d.repo.distributions.list(limit, offset, { file_id: fileId }));
  }

  /* ---------------- internals ---------------- */

  /** The live distribution holding this transfer for this agent. */
  private byTransferLive(transferId: string, agentId: string): DistLive | undefined {
    const id = this.byTransfer.get(transferId);
    const l = id ? this.waves.get(id) : undefined;
    return l && l.x.inflight.get(transferId) === agentId ? l : undefined;
  }

  /** Whether a target waits to be sent (its wave started; not sent, or its agent left mid-transfer). */
  private waiting(t: TargetRow): boolean {
    return t.state === 'pending' && t.startedAt != null;
  }

  /** An agent connected to `node` (this one or another): what waits for it goes out, through that node. */
  private onConnect(agentId: string, node: string): void {
    if (!this.runs.holds()) return;
    for (const l of this.waves.runs()) {
      const t = l.targets.get(agentId);
      if (l.row.state !== 'running' || !t) continue;
      if (t.state === 'sending') {
        // Sent through a node the agent has left (it may not have said so: killed): send again through this one.
        const transferId = [...l.x.inflight].find(([, a]) => a === agentId)?.[0];
        const via = transferId ? (l.x.remote.get(transferId)?.node ?? this.d.link.nodeId) : null;
        if (transferId == null || via === node) continue;
        this.endTransfer(l, transferId);
        t.state = 'pending';
      }
      if (this.waiting(t)) this.send(l, t, node);
    }
  }

  /** An agent of this node disconnected: its transfers here end (sent again when it is back). */
  private onDisconnect(agentId: string): void {
    for (const [transferId, r] of this.relays) {
      if (r.agentId !== agentId) continue;
      this.endRelay(transferId);
      this.d.link.send(r.from, GONE, { t: transferId, a: agentId });
    }
    for (const l of this.waves.runs()) {
      for (const [transferId, a] of l.x.inflight) if (a === agentId && !l.x.remote.has(transferId)) this.lost(l, transferId, agentId);
    }
  }

  /** A transfer's agent left during it: the target waits for the agent to return (or fails by the timeout). */
  private lost(l: DistLive, transferId: string, agentId: string): void {
    this.endTransfer(l, transferId);
    const t = l.targets.get(agentId);
    if (t && t.state === 'sending') {
      t.state = 'pending';
      t.reason = 'agent disconnected during the transfer; waiting for it to return';
      this.waves.touch(l, t);
    }
  }

  /** The command for a target of this distribution. */
  private command(l: DistLive, transferId: string): FileCommand {
    const { file: f, revision } = l.x;
    if (l.row.kind === 'remove') return { type: 'file.remove', transferId, fileId: f.id, path: f.path };
    return {
      type: 'file.apply',
      transferId,
      fileId: f.id,
      revision: revision!.revision,
      path: f.path,
      owner: f.owner,
      group: f.group,
      mode: f.mode,
      size: revision!.size,
      sha256: revision!.sha256,
    };
  }

  /**
   * Sends a target its command: to its agent here, or through the node holding its socket (`node`:
   * where it just connected). An agent connected nowhere known gets it when it connects.
   */
  private send(l: DistLive, t: TargetRow, node?: string): void {
    const { fleet, link } = this.d;
    const here = fleet.isOnline(t.agentId);
    const via = here ? link.nodeId : (node ?? this.d.agentNode(t.agentId));
    if (via == null || (via === link.nodeId && !here)) return; // sent when it connects
    const transferId = randomUUID();
    const cmd = this.command(l, transferId);
    l.x.inflight.set(transferId, t.agentId);
    this.byTransfer.set(transferId, l.row.id);
    if (!here) l.x.remote.set(transferId, { node: via, progressAt: Date.now() });
    t.state = 'sending';
    t.reason = null;
    this.waves.touch(l, t);
    const current = () => l.x.inflight.get(transferId) === t.agentId;
    const sent: Promise<ApplyAnswer> = here
      ? this.deliverHere(t.agentId, cmd, current).then(
          (ok): ApplyAnswer => (ok ? { ok: true } : { ok: false, offline: 'agent disconnected before the command went out' }),
          (err: unknown): ApplyAnswer => ({ ok: false, failed: `server could not read the revision content: ${(err as Error).message}` }),
        )
      : (link.request(via, APPLY, { a: t.agentId, c: cmd }, undefined, WAVE_CALL_TIMEOUT_MS) as Promise<ApplyAnswer>).catch((err: unknown): ApplyAnswer => ({
          ok: false,
          offline: `server node ${via} did not take the command: ${(err as Error).message}`,
        }));
    void sent.then((a) => {
      if (a.ok || !current()) return;
      this.endTransfer(l, transferId);
      if ('failed' in a) {
        this.waves.setTarget(l, t, 'failed', a.failed.slice(0, 2048));
        this.waves.advance(l);
        return;
      }
      t.state = 'pending';
      t.reason = `${a.offline}; waiting for the agent to connect`.slice(0, 2048);
      this.waves.touch(l, t);
      // It may have connected elsewhere meanwhile (its hello came while this command was on its way).
      const now = fleet.isOnline(t.agentId) ? link.nodeId : this.d.agentNode(t.agentId);
      if (now != null && now !== via && l.row.state === 'running') this.send(l, t);
    });
  }

  /**
   * Sends a command to an agent connected here, after its content is on this node (copied from the
   * shared store if need be); the content streams once the agent acks. False when the agent is not
   * connected here; nothing is sent when `wanted` says the command was withdrawn meanwhile.
   */
  private async deliverHere(agentId: string, cmd: FileCommand, wanted: () => boolean): Promise<boolean> {
    const file = cmd.type === 'file.apply' ? await this.d.content.ensure(cmd.fileId, cmd.sha256) : null;
    if (!wanted()) return true;
    if (!this.d.fleet.isOnline(agentId) || !this.d.fleet.send(agentId, cmd)) return false;
    if (cmd.type === 'file.apply') this.d.transfers.add(cmd.transferId, agentId, file!, cmd.size);
    return true;
  }

  /** APPLY from the node driving distributions: stream a command to an agent of this node. */
  private async relay(agentId: string, cmd: FileCommand, from: string): Promise<ApplyAnswer> {
    const node = this.d.link.nodeId;
    if (!this.d.fleet.isOnline(agentId)) return { ok: false, offline: `agent is not connected to server node ${node}` };
    // One command per agent and file at a time: a newer one (the holder sent again) replaces it.
    for (const [id, r] of this.relays) if (r.agentId === agentId && r.fileId === cmd.fileId) this.endRelay(id);
    this.relays.set(cmd.transferId, { agentId, fileId: cmd.fileId, from, reportedAt: 0 });
    try {
      if (await this.deliverHere(agentId, cmd, () => this.relays.has(cmd.transferId))) return { ok: true };
      this.endRelay(cmd.transferId);
      return { ok: false, offline: `agent is not connected to server node ${node}` };
    } catch (err) {
      this.endRelay(cmd.transferId);
      return { ok: false, failed: `server node ${node} could not get the revision content: ${(err as Error).message}` };
    }
  }

  private endRelay(transferId: string): void {
    this.relays.delete(transferId);
    this.d.transfers.end(transferId);
  }

  private endTransfer(l: DistLive, transferId: string): void {
    l.x.inflight.delete(transferId);
    this.byTransfer.delete(transferId);
    const remote = l.x.remote.get(transferId);
    if (remote) {
      l.x.remote.delete(transferId);
      this.d.link.send(remote.node, END, { t: transferId });
    } else this.d.transfers.end(transferId);
  }
}

/** The public JSON view of a distribution. */
export function distributionView(row: DistributionRow, targets: TargetRow[], withTargets: boolean): DistributionView {
  const iso = (t: number) => new Date(t).toISOString();
  const counts: Partial<Record<DistributionTargetState, number>> = {};
  let failures = 0;
  for (const t of targets) {
    counts[t.state] = (counts[t.state] ?? 0) + 1;
    if (t.state === 'failed') failures++;
  }
  const view: DistributionView = {
    id: row.id,
    fileId: row.fileId,
    revision: row.revision,
    kind: row.kind,
    selector: row.selector,
    waveSpec: row.waveSpec,
    maxFailures: row.maxFailures,
    state: row.state,
    reason: row.reason,
    currentWave: row.currentWave,
    failures,
    ...gateView(row),
    counts,
    total: targets.length,
    createdBy: row.createdBy,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
    finishedAt: row.finishedAt == null ? null : iso(row.finishedAt),
  };
  if (withTargets) {
    view.targets = targets.map((t) => ({
      agentId: t.agentId,
      agentName: t.agentName,
      wave: t.wave,
      state: t.state,
      reason: t.reason,
      postTaskId: t.postTaskId,
      updatedAt: iso(t.updatedAt),
    }));
  }
  return view;
}
