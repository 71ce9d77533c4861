import { randomUUID } from 'node:crypto';
import type { AgentMessage, DistributionTargetState, DistributionView } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import type { Bus } from '../bus/bus.js';
import type { Leases } from '../cluster/lease.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/repo.js';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../log.js';
import { gateView, WaveEngine, type Live, type WaveDriver } from '../waves/engine.js';
import { LeasedWaves } from '../waves/leased.js';
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
  actor: Actor;
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
 * `distribution.updated`.
 */
export class DistributionEngine {
  private readonly runs: LeasedWaves<DistributionRow, TargetRow, Extra, DistributionView, NewDistribution>;
  private readonly waves: WaveEngine<DistributionRow, TargetRow, Extra, DistributionView>;
  /** transferId → distribution id. */
  private readonly byTransfer = new Map<string, string>();

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
        return { file, revision, inflight: new Map(), actor: { username: row.createdBy, role: null, ip: null } };
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
        for (const t of l.targets.values()) if (t.wave === l.row.currentWave && t.state === 'pending' && t.startedAt != null) this.send(l, t);
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
          const progress = Math.max(t.startedAt, transferId ? (transfers.lastProgress(transferId) ?? 0) : 0, t.updatedAt);
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
      suspending: () => {
        for (const l of this.waves.runs()) for (const [transferId] of l.x.inflight) this.endTransfer(l, transferId);
      },
    });
    this.waves = this.runs.engine;
  }

  async start(): Promise<void> {
    // Connect hooks run once the welcome is written: a waiting transfer may start at once.
    this.d.fleet.onConnect((agentId) => this.onConnect(agentId));
    this.d.fleet.onDisconnect((agentId) => this.onDisconnect(agentId));
    await this.runs.start();
  }

  async stop(): Promise<void> {
    await this.runs.stop();
    await this.d.transfers.close();
    await this.waves.flushed();
  }

  /** Whether a running distribution holds this transfer for this agent (its replies skip the message rate). */
  holds(agentId: string, transferId: string): boolean {
    const id = this.byTransfer.get(transferId);
    return Boolean(id && this.waves.get(id)?.x.inflight.get(transferId) === agentId);
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
    const extra: Extra = { file: input.file, revision: input.revision, inflight: new Map(), actor: input.actor };
    const { sizes } = await this.waves.create(row, extra, candidates);
    this.d.log.info({ distributionId: row.id, fileId: row.fileId, revision: row.revision, kind: row.kind, waves: sizes }, 'file distribution created');
    return row;
  }

  /** `file.result` from an agent. */
  async result(agentId: string, m: AgentMessage<'file.result'>): Promise<void> {
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
    if (this.byTransferLive(m.transferId, agentId)) this.d.transfers.ack(agentId, m.transferId, m.offset);
  }

  /** A transfer could not read its content (the file vanished from the data dir). */
  transferFailed(transferId: string, err: unknown): void {
    const id = this.byTransfer.get(transferId);
    const l = id ? this.waves.get(id) : undefined;
    const agentId = l?.x.inflight.get(transferId);
    if (!l || !agentId) return;
    this.endTransfer(l, transferId);
    const t = l.targets.get(agentId);
    if (t) this.waves.setTarget(l, t, 'failed', `server could not read the revision content: ${(err as Error).message}`);
    this.waves.advance(l);
  }

  pause(id: string, by: string): Promise<DistributionRow> {
    return this.runs.pause(id, by);
  }

  resume(id: string): Promise<DistributionRow> {
    return this.runs.resume(id);
  }

  approve(id: string): Promise<DistributionRow> {
    return this.runs.approve(id);
  }

  cancel(id: string, by: string): Promise<DistributionRow> {
    return this.runs.cancel(id, by);
  }

  view(id: string, withTargets: boolean): Promise<DistributionView> {
    return this.runs.view(id, withTargets);
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

  private onConnect(agentId: string): void {
    for (const l of this.waves.runs()) {
      const t = l.targets.get(agentId);
      if (l.row.state === 'running' && t && t.state === 'pending' && t.startedAt != null) this.send(l, t);
    }
  }

  private onDisconnect(agentId: string): void {
    for (const l of this.waves.runs()) {
      for (const [transferId, a] of l.x.inflight) {
        if (a !== agentId) continue;
        this.endTransfer(l, transferId);
        const t = l.targets.get(agentId);
        // Sent again when the agent is back (or failed by the timeout if it is not).
        if (t && t.state === 'sending') {
          t.state = 'pending';
          t.reason = 'agent disconnected during the transfer; waiting for it to return';
          this.waves.touch(l, t);
        }
      }
    }
  }

  private send(l: DistLive, t: TargetRow): void {
    if (!this.d.fleet.isOnline(t.agentId)) {
      const node = this.d.agentNode(t.agentId);
      // Files are not carried across nodes yet (README, Cluster): say so at once rather than time out.
      if (node != null && node !== this.d.link.nodeId)
        this.waves.setTarget(
          l,
          t,
          'failed',
          `agent is connected to server node ${node}: file distributions reach only agents of the node driving them (${this.d.link.nodeId}) for now`,
        );
      return; // else sent when it connects
    }
    const transferId = randomUUID();
    const { file: f, revision } = l.x;
    const ok =
      l.row.kind === 'remove'
        ? this.d.fleet.send(t.agentId, { type: 'file.remove', transferId, fileId: f.id, path: f.path })
        : this.d.fleet.send(t.agentId, {
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
          });
    if (!ok) return;
    l.x.inflight.set(transferId, t.agentId);
    this.byTransfer.set(transferId, l.row.id);
    if (l.row.kind === 'apply') this.d.transfers.add(transferId, t.agentId, this.d.content.pathOf(f.id, revision!.sha256), revision!.size);
    t.state = 'sending';
    t.reason = null;
    this.waves.touch(l, t);
  }

  private endTransfer(l: DistLive, transferId: string): void {
    l.x.inflight.delete(transferId);
    this.byTransfer.delete(transferId);
    this.d.transfers.end(transferId);
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
