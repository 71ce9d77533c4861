import { randomUUID } from 'node:crypto';
import type { AgentMessage, DistributionTargetState, DistributionView } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import type { Bus } from '../bus/bus.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/registry.js';
import { ApiError, notFound } from '../http/errors.js';
import type { Logger } from '../log.js';
import { waveSizes, type WaveSpec } from '../updates/waves.js';
import type { ContentStore } from './content.js';
import type { DistributionRow, FileRow, FileStore, RevisionRow, TargetRow } from './store.js';
import type { TransferManager } from './transfer.js';

const TERMINAL: ReadonlySet<DistributionTargetState> = new Set(['applied', 'unchanged', 'removed', 'failed', 'skipped']);

export interface NewDistribution {
  file: FileRow;
  revision: RevisionRow | null; // null for kind 'remove'
  kind: 'apply' | 'remove';
  selector: string;
  waves: WaveSpec[];
  maxFailures: number;
  actor: Actor;
}

interface Live {
  row: DistributionRow;
  file: FileRow;
  revision: RevisionRow | null;
  targets: Map<string, TargetRow>;
  /** transferId → agentId of the command in flight for each target. */
  inflight: Map<string, string>;
  actor: Actor;
}

export interface EngineDeps {
  store: FileStore; content: ContentStore; transfers: TransferManager; fleet: Fleet; bus: Bus; log: Logger;
  /** A target that makes no progress for this long fails (offline agent, stalled transfer). */
  applyTimeoutSec: number;
  /** Runs a file's post-apply command on one host; answers the task id. */
  runPostCommand(command: string, agentId: string, actor: Actor, file: FileRow): Promise<string | null>;
  tickMs?: number;
}

/**
 * Drives file distributions: splits targets into waves (updates/waves.ts, as rollouts do), sends
 * `file.apply` (or `file.remove`) to each wave's agents, streams content through the
 * TransferManager, follows their `file.result`, pauses past maxFailures, and moves on wave by
 * wave. Agents that drop mid-transfer get the command again when they return (the agent compares
 * hashes first, so a repeat costs nothing). Every change is written through in order and
 * published on the bus as `distribution.updated` (throttled).
 */
export class DistributionEngine {
  private readonly live = new Map<string, Live>();
  /** transferId → distribution id. */
  private readonly byTransfer = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private writes: Promise<void> = Promise.resolve();
  private readonly publishTimers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly d: EngineDeps) {}

  async start(): Promise<void> {
    for (const row of await this.d.store.activeDistributions()) {
      const file = await this.d.store.getFile(row.fileId, true);
      const revision = row.kind === 'apply' ? await this.d.store.getRevision(row.fileId, row.revision) : null;
      if (!file || (row.kind === 'apply' && !revision)) continue;
      const targets = new Map((await this.d.store.targets(row.id)).map((t) => [t.agentId, t]));
      // Nothing is in flight after a restart: what was being sent is sent again.
      for (const t of targets.values()) if (t.state === 'sending') t.state = 'pending';
      this.live.set(row.id, { row, file, revision, targets, inflight: new Map(), actor: { username: row.createdBy, role: null, ip: null } });
    }
    this.d.fleet.onConnect((agentId) => setImmediate(() => this.onConnect(agentId)));
    this.d.fleet.onDisconnect((agentId) => this.onDisconnect(agentId));
    this.timer = setInterval(() => this.tick(), this.d.tickMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const t of this.publishTimers.values()) clearTimeout(t);
    this.publishTimers.clear();
    await this.d.transfers.close();
    await this.writes;
  }

  /** Whether a running distribution holds this transfer for this agent (its replies skip the message rate). */
  holds(agentId: string, transferId: string): boolean {
    const id = this.byTransfer.get(transferId);
    return Boolean(id && this.live.get(id)?.inflight.get(transferId) === agentId);
  }

  /** The distribution of a file that is running or paused, if any. */
  activeFor(fileId: string): DistributionRow | null {
    for (const l of this.live.values()) if (l.row.fileId === fileId && (l.row.state === 'running' || l.row.state === 'paused')) return l.row;
    return null;
  }

  async create(input: NewDistribution, candidates: AgentRecord[]): Promise<DistributionRow> {
    const active = this.activeFor(input.file.id);
    if (active) throw new ApiError('conflict', `distribution ${active.id} of this file is ${active.state}; cancel it or let it finish first`, 409, { distributionId: active.id });
    const now = Date.now();
    const id = randomUUID();
    const agents = candidates.filter((a) => a.revokedAt == null).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    const sizes = waveSizes(input.waves, agents.length);
    const targets: TargetRow[] = [];
    let i = 0;
    sizes.forEach((size, wave) => {
      for (const a of agents.slice(i, i + size)) {
        targets.push({ distributionId: id, agentId: a.id, agentName: a.name, wave, state: 'pending', reason: null, postTaskId: null, startedAt: null, updatedAt: now });
      }
      i += size;
    });
    const row: DistributionRow = {
      id, fileId: input.file.id, revision: input.revision?.revision ?? input.file.latestRevision, kind: input.kind, selector: input.selector,
      waveSpec: input.waves, maxFailures: input.maxFailures, state: 'running', reason: null, currentWave: 0, failureBase: 0,
      createdBy: input.actor.username, createdAt: now, updatedAt: now, finishedAt: null,
    };
    await this.d.store.insertDistribution(row, targets);
    const l: Live = { row, file: input.file, revision: input.revision, targets: new Map(targets.map((t) => [t.agentId, t])), inflight: new Map(), actor: input.actor };
    this.live.set(id, l);
    this.d.log.info({ distributionId: id, fileId: row.fileId, revision: row.revision, kind: row.kind, targets: targets.length, waves: sizes }, 'file distribution created');
    const first = sizes.findIndex((n) => n > 0);
    if (first < 0) this.finish(l);
    else this.startWave(l, first);
    await this.writes;
    return row;
  }

  /** `file.result` from an agent. */
  async result(agentId: string, m: AgentMessage<'file.result'>): Promise<void> {
    const distId = this.byTransfer.get(m.transferId);
    const l = distId ? this.live.get(distId) : undefined;
    if (!l || l.inflight.get(m.transferId) !== agentId) return;
    this.endTransfer(l, m.transferId);
    const t = l.targets.get(agentId);
    if (!t || TERMINAL.has(t.state)) return;
    const now = Date.now();
    if (m.state === 'failed') {
      this.setTarget(l, t, 'failed', m.code ? `${m.code}: ${m.reason ?? ''}` : m.reason ?? 'failed');
    } else if (m.state === 'removed') {
      this.write(() => this.d.store.removeHost(l.row.fileId, agentId));
      this.setTarget(l, t, 'removed', null);
    } else {
      const rev = l.revision!;
      this.write(() => this.d.store.upsertHost({ fileId: l.row.fileId, agentId, revision: rev.revision, sha256: rev.sha256, state: 'ok', reason: null, updatedAt: now }));
      this.setTarget(l, t, m.state, m.state === 'applied' && !m.contentChanged ? 'owner or mode corrected; content unchanged' : null);
      if (m.state === 'applied' && m.contentChanged && l.file.postCommand) {
        try {
          t.postTaskId = await this.d.runPostCommand(l.file.postCommand, agentId, l.actor, l.file);
        } catch (err) {
          t.reason = `post-apply command not started: ${(err as Error).message}`.slice(0, 2048);
        }
        this.touch(l, t);
      }
    }
    this.advance(l);
  }

  /** `file.ack`: flow control, handed to the transfer manager. */
  ack(agentId: string, m: AgentMessage<'file.ack'>): void {
    const distId = this.byTransfer.get(m.transferId);
    const l = distId ? this.live.get(distId) : undefined;
    if (!l || l.inflight.get(m.transferId) !== agentId) return;
    this.d.transfers.ack(agentId, m.transferId, m.offset);
  }

  /** A transfer could not read its content (the file vanished from the data dir). */
  transferFailed(transferId: string, err: unknown): void {
    const distId = this.byTransfer.get(transferId);
    const l = distId ? this.live.get(distId) : undefined;
    const agentId = l?.inflight.get(transferId);
    if (!l || !agentId) return;
    this.endTransfer(l, transferId);
    const t = l.targets.get(agentId);
    if (t) this.setTarget(l, t, 'failed', `server could not read the revision content: ${(err as Error).message}`);
    this.advance(l);
  }

  pause(id: string, by: string): DistributionRow {
    const l = this.mustLive(id);
    if (l.row.state !== 'running') throw new ApiError('conflict', `distribution is ${l.row.state}`);
    this.setRow(l, { state: 'paused', reason: `paused by ${by}` });
    return l.row;
  }

  resume(id: string): DistributionRow {
    const l = this.mustLive(id);
    if (l.row.state !== 'paused') throw new ApiError('conflict', `distribution is ${l.row.state}`);
    this.setRow(l, { state: 'running', reason: null, failureBase: this.failures(l) });
    // Targets of the current wave that were held back while paused go out now.
    for (const t of l.targets.values()) if (t.wave === l.row.currentWave && t.state === 'pending' && t.startedAt != null) this.send(l, t);
    this.advance(l);
    return l.row;
  }

  cancel(id: string, by: string): DistributionRow {
    const l = this.mustLive(id);
    if (l.row.state !== 'running' && l.row.state !== 'paused') throw new ApiError('conflict', `distribution is ${l.row.state}`);
    for (const [transferId] of l.inflight) this.endTransfer(l, transferId);
    for (const t of l.targets.values()) if (!TERMINAL.has(t.state)) this.setTarget(l, t, 'skipped', `cancelled by ${by}`);
    this.setRow(l, { state: 'cancelled', reason: `cancelled by ${by}`, finishedAt: Date.now() });
    this.live.delete(id);
    return l.row;
  }

  async view(id: string, withTargets: boolean): Promise<DistributionView> {
    const l = this.live.get(id);
    const row = l?.row ?? (await this.d.store.getDistribution(id));
    if (!row) throw notFound('distribution');
    const targets = l ? [...l.targets.values()] : await this.d.store.targets(id);
    return distributionView(row, targets, withTargets);
  }

  async list(fileId: string, limit: number, offset: number): Promise<{ items: DistributionView[]; total: number }> {
    const { items, total } = await this.d.store.listDistributions(fileId, limit, offset);
    return { items: await Promise.all(items.map((r) => this.view(r.id, false))), total };
  }

  /* ---------------- internals ---------------- */

  private mustLive(id: string): Live {
    const l = this.live.get(id);
    if (!l) throw new ApiError('conflict', 'distribution is not active', 409);
    return l;
  }

  private onConnect(agentId: string): void {
    for (const l of this.live.values()) {
      const t = l.targets.get(agentId);
      if (l.row.state === 'running' && t && t.state === 'pending' && t.startedAt != null) this.send(l, t);
    }
  }

  private onDisconnect(agentId: string): void {
    for (const l of this.live.values()) {
      for (const [transferId, a] of l.inflight) {
        if (a !== agentId) continue;
        this.endTransfer(l, transferId);
        const t = l.targets.get(agentId);
        // Sent again when the agent is back (or failed by the timeout if it is not).
        if (t && t.state === 'sending') {
          t.state = 'pending';
          t.reason = 'agent disconnected during the transfer; waiting for it to return';
          this.touch(l, t);
        }
      }
    }
  }

  private tick(): void {
    const now = Date.now();
    const limit = this.d.applyTimeoutSec * 1000;
    for (const l of [...this.live.values()]) {
      if (l.row.state !== 'running') continue;
      // agentId → its transfer, built once per tick (a scan per target was quadratic in the wave's size).
      const transferOf = new Map<string, string>();
      for (const [transferId, agentId] of l.inflight) transferOf.set(agentId, transferId);
      for (const t of l.targets.values()) {
        if (t.startedAt == null || TERMINAL.has(t.state)) continue;
        const transferId = transferOf.get(t.agentId);
        const progress = Math.max(t.startedAt, transferId ? this.d.transfers.lastProgress(transferId) ?? 0 : 0, t.updatedAt);
        if (now - progress > limit) {
          if (transferId) this.endTransfer(l, transferId);
          const online = this.d.fleet.isOnline(t.agentId);
          this.setTarget(l, t, 'failed', online ? `no progress for ${this.d.applyTimeoutSec} s` : `agent offline for ${this.d.applyTimeoutSec} s`);
        }
      }
      this.advance(l);
    }
  }

  private advance(l: Live): void {
    if (l.row.state !== 'running') return;
    const current = [...l.targets.values()].filter((t) => t.wave === l.row.currentWave);
    if (current.some((t) => !TERMINAL.has(t.state))) return;
    const next = Math.min(...[...l.targets.values()].filter((t) => t.wave > l.row.currentWave).map((t) => t.wave));
    if (Number.isFinite(next)) this.startWave(l, next);
    else this.finish(l);
  }

  private startWave(l: Live, wave: number): void {
    const now = Date.now();
    this.setRow(l, { currentWave: wave });
    for (const t of l.targets.values()) {
      if (t.wave !== wave || t.state !== 'pending') continue;
      t.startedAt = now;
      this.touch(l, t);
      this.send(l, t);
    }
  }

  private send(l: Live, t: TargetRow): void {
    if (!this.d.fleet.isOnline(t.agentId)) return; // sent when it connects
    const transferId = randomUUID();
    const f = l.file;
    const ok = l.row.kind === 'remove'
      ? this.d.fleet.send(t.agentId, { type: 'file.remove', transferId, fileId: f.id, path: f.path })
      : this.d.fleet.send(t.agentId, {
        type: 'file.apply', transferId, fileId: f.id, revision: l.revision!.revision, path: f.path, owner: f.owner, group: f.group,
        mode: f.mode, size: l.revision!.size, sha256: l.revision!.sha256,
      });
    if (!ok) return;
    l.inflight.set(transferId, t.agentId);
    this.byTransfer.set(transferId, l.row.id);
    if (l.row.kind === 'apply') this.d.transfers.add(transferId, t.agentId, this.d.content.pathOf(f.id, l.revision!.sha256), l.revision!.size);
    t.state = 'sending';
    t.reason = null;
    this.touch(l, t);
  }

  private endTransfer(l: Live, transferId: string): void {
    l.inflight.delete(transferId);
    this.byTransfer.delete(transferId);
    this.d.transfers.end(transferId);
  }

  private finish(l: Live): void {
    const failures = this.failures(l);
    this.setRow(l, { state: failures > 0 ? 'failed' : 'succeeded', reason: failures > 0 ? `${failures} host(s) failed` : null, finishedAt: Date.now() });
    this.live.delete(l.row.id);
    this.d.log.info({ distributionId: l.row.id, state: l.row.state }, 'file distribution finished');
  }

  private failures(l: Live): number {
    let n = 0;
    for (const t of l.targets.values()) if (t.state === 'failed') n++;
    return n;
  }

  private setTarget(l: Live, t: TargetRow, state: DistributionTargetState, reason: string | null): void {
    if (TERMINAL.has(t.state)) return;
    t.state = state;
    t.reason = reason;
    this.touch(l, t);
    if (state === 'failed' && l.row.state === 'running') {
      const failures = this.failures(l) - l.row.failureBase;
      if (failures > l.row.maxFailures) {
        this.setRow(l, { state: 'paused', reason: `${failures} failure(s) exceed maxFailures ${l.row.maxFailures}; resume to go on` });
        this.d.log.warn({ distributionId: l.row.id, failures }, 'file distribution paused after failures');
      }
    }
  }

  private touch(l: Live, t: TargetRow): void {
    t.updatedAt = Date.now();
    const copy = { ...t };
    this.write(() => this.d.store.updateTarget(copy));
    this.publish(l);
  }

  private setRow(l: Live, patch: Partial<DistributionRow>): void {
    Object.assign(l.row, patch, { updatedAt: Date.now() });
    const copy = { ...l.row };
    this.write(() => this.d.store.updateDistribution(copy));
    this.publish(l);
  }

  private write(fn: () => Promise<void>): void {
    this.writes = this.writes.then(fn).catch((err: unknown) => this.d.log.error({ err }, 'file distribution write failed'));
  }

  private publish(l: Live): void {
    const { id, fileId } = l.row;
    if (this.publishTimers.has(id)) return;
    const timer = setTimeout(() => {
      this.publishTimers.delete(id);
      void this.writes.then(() => this.d.bus.publish('distribution.updated', { distributionId: id, fileId }));
    }, 200);
    timer.unref();
    this.publishTimers.set(id, timer);
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
    id: row.id, fileId: row.fileId, revision: row.revision, kind: row.kind, selector: row.selector, waveSpec: row.waveSpec,
    maxFailures: row.maxFailures, state: row.state, reason: row.reason, currentWave: row.currentWave, failures, counts, total: targets.length,
    createdBy: row.createdBy, createdAt: iso(row.createdAt), updatedAt: iso(row.updatedAt), finishedAt: row.finishedAt == null ? null : iso(row.finishedAt),
  };
  if (withTargets) {
    view.targets = targets.map((t) => ({
      agentId: t.agentId, agentName: t.agentName, wave: t.wave, state: t.state, reason: t.reason, postTaskId: t.postTaskId, updatedAt: iso(t.updatedAt),
    }));
  }
  return view;
}
