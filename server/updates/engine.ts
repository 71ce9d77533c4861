import { randomUUID } from 'node:crypto';
import type { Hello, RolloutView, RolloutWaveView, UpdateState } from '../../protocol/index.js';
import type { Bus } from '../bus/bus.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/registry.js';
import { ApiError, notFound } from '../http/errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { RolloutRow, TargetRow, UpdateStore } from './store.js';
import { waveSizes, type WaveSpec } from './waves.js';

const TERMINAL: ReadonlySet<UpdateState> = new Set(['succeeded', 'failed', 'rolled_back', 'skipped']);
const FAILED: ReadonlySet<UpdateState> = new Set(['failed', 'rolled_back']);
/** States in which an agent that reconnects on its old version has lost the update (no marker yet). */
const BEFORE_SWITCH: ReadonlySet<UpdateState> = new Set(['downloading', 'verifying', 'installing']);

export interface RolloutPackage {
  artifactId: string | null; version: string; url: string | null; size: number; sha256: string; signature: string;
  /** CPU architecture the package is for (from its file name); agents of another arch are skipped. */
  arch: string | null;
}

export interface NewRollout extends RolloutPackage {
  selector: string;
  waves: WaveSpec[];
  maxFailures: number;
  allowDowngrade: boolean;
  createdBy: string;
}

interface Live {
  row: RolloutRow;
  targets: Map<string, TargetRow>;
  /** Targets whose `update` went out on the current connection of their agent. */
  sent: Set<string>;
}

/**
 * Drives rollouts: splits targets into waves, sends `update` to each wave's agents, follows
 * their update.status reports and reconnects, fails targets not back with the new version
 * within updateTimeoutSec, pauses past maxFailures, and moves on wave by wave.
 * Memory holds every running or paused rollout (and cancelled ones until their in-flight
 * targets end); each change is written through to the database in order, then published on
 * the bus as `rollout.updated`.
 */
export class RolloutEngine {
  private readonly live = new Map<string, Live>();
  private timer: NodeJS.Timeout | undefined;
  private writes: Promise<void> = Promise.resolve();
  private readonly publishTimers = new Map<string, NodeJS.Timeout>();
  /** Agents that said in hello they cannot update themselves (run from a checkout, not a package). */
  private readonly cannotUpdate = new Set<string>();

  constructor(private readonly d: {
    store: UpdateStore; fleet: Fleet; bus: Bus; log: Logger; metrics: Metrics; updateTimeoutSec: number; downloadPath: (artifactId: string) => string;
    tickMs?: number;
  }) {}

  async start(): Promise<void> {
    for (const row of await this.d.store.activeRollouts()) {
      const targets = new Map((await this.d.store.targets(row.id)).map((t) => [t.agentId, t]));
      this.live.set(row.id, { row, targets, sent: new Set() });
    }
    // Connect hooks run once the welcome is written, so commands may go out at once.
    this.d.fleet.onConnect((agentId, hello) => {
      if (hello.capabilities.includes('update')) this.cannotUpdate.delete(agentId);
      else this.cannotUpdate.add(agentId);
      this.onConnect(agentId, hello);
    });
    this.d.fleet.onDisconnect((agentId) => {
      for (const l of this.live.values()) l.sent.delete(agentId);
    });
    this.timer = setInterval(() => this.tick(), this.d.tickMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const t of this.publishTimers.values()) clearTimeout(t);
    this.publishTimers.clear();
    await this.writes;
  }

  /** Creates a rollout over the agents `candidates` (already filtered by selector) and starts wave 0. */
  async create(input: NewRollout, candidates: AgentRecord[]): Promise<RolloutRow> {
    for (const l of this.live.values()) {
      if (l.row.state === 'running' || l.row.state === 'paused') {
        throw new ApiError('conflict', `rollout ${l.row.id} is ${l.row.state}; cancel it or let it finish first`, 409, { rolloutId: l.row.id });
      }
    }
    const now = Date.now();
    const id = randomUUID();
    const agents = candidates.filter((a) => a.revokedAt == null).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    const targets: TargetRow[] = [];
    const skipWhy = (a: AgentRecord): string | null => {
      if (a.version === input.version) return `already at ${input.version}`;
      if (input.arch && a.arch !== input.arch) return `package is for ${input.arch}, agent is ${a.arch}`;
      if (this.cannotUpdate.has(a.id)) return 'agent cannot update itself (not installed from a package)';
      return null;
    };
    for (const a of agents) {
      const reason = skipWhy(a);
      if (reason) targets.push({ rolloutId: id, agentId: a.id, agentName: a.name, wave: -1, state: 'skipped', reason, fromVersion: a.version, startedAt: null, updatedAt: now });
    }
    const toUpdate = agents.filter((a) => skipWhy(a) === null);
    const sizes = waveSizes(input.waves, toUpdate.length);
    let i = 0;
    sizes.forEach((size, wave) => {
      for (const a of toUpdate.slice(i, i + size)) {
        targets.push({ rolloutId: id, agentId: a.id, agentName: a.name, wave, state: 'pending', reason: null, fromVersion: a.version, startedAt: null, updatedAt: now });
      }
      i += size;
    });
    const row: RolloutRow = {
      id, artifactId: input.artifactId, version: input.version, url: input.url, size: input.size, sha256: input.sha256, signature: input.signature,
      selector: input.selector, waveSpec: input.waves, maxFailures: input.maxFailures, allowDowngrade: input.allowDowngrade, state: 'running',
      reason: null, currentWave: 0, failureBase: 0, createdBy: input.createdBy, createdAt: now, updatedAt: now, finishedAt: null,
    };
    await this.d.store.insertRollout(row, targets);
    for (const t of targets) if (t.state === 'skipped') this.d.metrics.rolloutTargets.inc({ result: 'skipped' });
    const l: Live = { row, targets: new Map(targets.map((t) => [t.agentId, t])), sent: new Set() };
    this.live.set(id, l);
    this.d.log.info({ rolloutId: id, version: row.version, targets: targets.length, waves: sizes }, 'rollout created');
    const first = sizes.findIndex((n) => n > 0);
    if (first < 0) this.finish(l);
    else this.startWave(l, first);
    await this.writes;
    return row;
  }

  /** An agent's update.status for one of its targets. */
  async report(agentId: string, rolloutId: string, state: UpdateState, reason: string | undefined): Promise<void> {
    if (state === 'pending' || state === 'skipped') return;
    const l = this.live.get(rolloutId);
    if (l) {
      const t = l.targets.get(agentId);
      if (!t || t.startedAt == null) return;
      if (t.state === 'failed' && state === 'failed' && reason) {
        // The server had already failed it (e.g. it came back on the old version); the agent knows why.
        t.reason = reason;
        this.touch(l, t);
        return;
      }
      this.setTarget(l, t, state, reason ?? null);
      this.advance(l);
      return;
    }
    // A finished rollout: still record a late outcome (e.g. rolled_back after a timeout).
    const t = await this.d.store.getTarget(rolloutId, agentId);
    const reasonOnly = t?.state === 'failed' && state === 'failed' && Boolean(reason);
    if (!t || t.startedAt == null || (!reasonOnly && !this.allowed(t.state, state))) return;
    Object.assign(t, { state, reason: reason ?? null, updatedAt: Date.now() });
    await this.d.store.updateTarget(t);
    this.d.bus.publish('rollout.updated', { rolloutId });
  }

  pause(id: string, by: string): RolloutRow {
    const l = this.mustLive(id);
    if (l.row.state !== 'running') throw new ApiError('conflict', `rollout is ${l.row.state}`);
    this.setRollout(l, { state: 'paused', reason: `paused by ${by}` });
    return l.row;
  }

  resume(id: string): RolloutRow {
    const l = this.mustLive(id);
    if (l.row.state !== 'paused') throw new ApiError('conflict', `rollout is ${l.row.state}`);
    // Failures so far were seen by whoever resumed: only new ones count against maxFailures.
    this.setRollout(l, { state: 'running', reason: null, failureBase: this.failures(l) });
    this.advance(l);
    return l.row;
  }

  cancel(id: string, by: string): RolloutRow {
    const l = this.mustLive(id);
    if (l.row.state !== 'running' && l.row.state !== 'paused') throw new ApiError('conflict', `rollout is ${l.row.state}`);
    const now = Date.now();
    for (const t of l.targets.values()) {
      if (t.state === 'pending' && (t.startedAt == null || !l.sent.has(t.agentId))) this.setTarget(l, t, 'skipped', 'rollout cancelled');
    }
    this.setRollout(l, { state: 'cancelled', reason: `cancelled by ${by}`, finishedAt: now });
    return l.row;
  }

  /** The rollout as the API shows it (`withTargets` adds every target). */
  async view(id: string, withTargets: boolean): Promise<RolloutView> {
    const l = this.live.get(id);
    const row = l?.row ?? (await this.d.store.getRollout(id));
    if (!row) throw notFound('rollout');
    const targets = l ? [...l.targets.values()] : await this.d.store.targets(id);
    return rolloutView(row, targets, withTargets);
  }

  async list(limit: number, offset: number): Promise<{ items: RolloutView[]; total: number }> {
    const { items, total } = await this.d.store.listRollouts(limit, offset);
    return { items: await Promise.all(items.map((r) => this.view(r.id, false))), total };
  }

  /* ---------------- internals ---------------- */

  private mustLive(id: string): Live {
    const l = this.live.get(id);
    if (!l) throw new ApiError('conflict', 'rollout is not active', 409);
    return l;
  }

  private onConnect(agentId: string, hello: Hello): void {
    for (const l of this.live.values()) {
      const t = l.targets.get(agentId);
      if (!t || t.startedAt == null) continue;
      if (hello.agentVersion === l.row.version) {
        if (t.state !== 'succeeded' && (!TERMINAL.has(t.state) || t.state === 'failed')) this.setTarget(l, t, 'succeeded', null);
      } else if (t.state === 'pending') {
        if (l.row.state !== 'cancelled') this.send(l, t);
      } else if (BEFORE_SWITCH.has(t.state)) {
        this.setTarget(l, t, 'failed', `agent came back on ${hello.agentVersion} during ${t.state}; the update did not complete`);
      }
      // 'restarting': the agent reports the outcome from its marker (failed, rolled_back) itself.
      this.advance(l);
    }
  }

  private tick(): void {
    const now = Date.now();
    const limit = this.d.updateTimeoutSec * 1000;
    for (const l of [...this.live.values()]) {
      for (const t of l.targets.values()) {
        if (t.startedAt != null && !TERMINAL.has(t.state) && now - t.startedAt > limit) {
          this.setTarget(l, t, 'failed', `agent not back with version ${l.row.version} within ${this.d.updateTimeoutSec} s (last state: ${t.state})`);
        }
      }
      this.advance(l);
      if (l.row.state !== 'running' && l.row.state !== 'paused' && ![...l.targets.values()].some((t) => t.startedAt != null && !TERMINAL.has(t.state))) {
        this.live.delete(l.row.id);
      }
    }
  }

  /** Starts the next wave when the current one is over; finishes the rollout after the last. */
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
    this.setRollout(l, { currentWave: wave });
    this.d.log.info({ rolloutId: l.row.id, wave }, 'rollout wave starting');
    for (const t of l.targets.values()) {
      if (t.wave !== wave || t.state !== 'pending') continue;
      t.startedAt = now;
      t.fromVersion = this.d.fleet.get(t.agentId)?.version ?? t.fromVersion;
      this.touch(l, t);
      this.send(l, t);
    }
  }

  private send(l: Live, t: TargetRow): void {
    const r = l.row;
    const sent = this.d.fleet.send(t.agentId, {
      type: 'update', rolloutId: r.id, version: r.version, url: r.url ?? this.d.downloadPath(r.artifactId ?? ''),
      size: r.size, sha256: r.sha256, signature: r.signature, allowDowngrade: r.allowDowngrade,
    });
    if (sent) l.sent.add(t.agentId);
  }

  private finish(l: Live): void {
    const failures = this.failures(l);
    const targets = [...l.targets.values()];
    // A rollout that updated nothing (every target skipped: already on the version, another
    // architecture, agents that cannot update themselves) must not read as a success: the
    // operator asked for a version and no host got it. It fails, and the reason says why.
    const updated = targets.filter((t) => t.state === 'succeeded').length;
    let reason: string | null = failures > 0 ? `${failures} target(s) failed` : null;
    if (failures === 0 && updated === 0) {
      const why = new Map<string, number>();
      for (const t of targets) if (t.state === 'skipped') why.set(t.reason ?? 'skipped', (why.get(t.reason ?? 'skipped') ?? 0) + 1);
      const summary = [...why].map(([r, n]) => `${r}: ${n}`).join('; ');
      reason = targets.length === 0 ? 'nothing to update: no target' : `nothing updated: all ${targets.length} target(s) skipped (${summary})`.slice(0, 1000);
    }
    this.setRollout(l, { state: reason ? 'failed' : 'succeeded', finishedAt: Date.now(), reason });
    this.d.log.info({ rolloutId: l.row.id, state: l.row.state }, 'rollout finished');
  }

  private failures(l: Live): number {
    let n = 0;
    for (const t of l.targets.values()) if (FAILED.has(t.state)) n++;
    return n;
  }

  /** Whether a target in `from` may move to `to`: terminal states stay, except a late success or rollback after a failure. */
  private allowed(from: UpdateState, to: UpdateState): boolean {
    if (from === to) return false;
    if (!TERMINAL.has(from)) return true;
    return from === 'failed' && (to === 'succeeded' || to === 'rolled_back');
  }

  private setTarget(l: Live, t: TargetRow, state: UpdateState, reason: string | null): void {
    if (!this.allowed(t.state, state)) return;
    if (TERMINAL.has(state)) this.d.metrics.rolloutTargets.inc({ result: state });
    if (state === 'failed' || state === 'rolled_back') {
      this.d.bus.publish('rollout.event', {
        rolloutId: l.row.id, version: l.row.version, event: state === 'failed' ? 'target.failed' : 'target.rolled_back', agentId: t.agentId, agentName: t.agentName, reason,
      });
    }
    t.state = state;
    t.reason = reason;
    this.touch(l, t);
    if (TERMINAL.has(state)) l.sent.delete(t.agentId);
    if (FAILED.has(state) && l.row.state === 'running') {
      const failures = this.failures(l) - l.row.failureBase;
      if (failures > l.row.maxFailures) {
        this.setRollout(l, { state: 'paused', reason: `${failures} failure(s) exceed maxFailures ${l.row.maxFailures}; resume to go on` });
        this.d.log.warn({ rolloutId: l.row.id, failures }, 'rollout paused after failures');
      }
    }
  }

  private touch(l: Live, t: TargetRow): void {
    t.updatedAt = Date.now();
    const copy = { ...t };
    this.write(() => this.d.store.updateTarget(copy));
    this.publish(l.row.id);
  }

  private setRollout(l: Live, patch: Partial<RolloutRow>): void {
    const pausedNow = patch.state === 'paused' && l.row.state !== 'paused';
    Object.assign(l.row, patch, { updatedAt: Date.now() });
    if (pausedNow) this.d.bus.publish('rollout.event', { rolloutId: l.row.id, version: l.row.version, event: 'paused', agentId: null, agentName: null, reason: l.row.reason });
    const copy = { ...l.row };
    this.write(() => this.d.store.updateRollout(copy));
    this.publish(l.row.id);
  }

  /** Database writes run one after another, in the order the changes happened. */
  private write(fn: () => Promise<void>): void {
    this.writes = this.writes.then(fn).catch((err: unknown) => this.d.log.error({ err }, 'rollout write failed'));
  }

  /** At most one rollout.updated per rollout per 200 ms (consoles refetch on it). */
  private publish(rolloutId: string): void {
    if (this.publishTimers.has(rolloutId)) return;
    const t = setTimeout(() => {
      this.publishTimers.delete(rolloutId);
      void this.writes.then(() => this.d.bus.publish('rollout.updated', { rolloutId }));
    }, 200);
    t.unref();
    this.publishTimers.set(rolloutId, t);
  }
}

/** The public JSON view of a rollout from its row and targets. */
export function rolloutView(row: RolloutRow, targets: TargetRow[], withTargets: boolean): RolloutView {
  const iso = (t: number) => new Date(t).toISOString();
  const counts: Partial<Record<UpdateState, number>> = {};
  const waves: RolloutWaveView[] = [];
  let failures = 0;
  // One entry per requested wave, so waves[i] is waveSpec[i] (some may be empty).
  for (let i = 0; i < row.waveSpec.length; i++) waves.push({ index: i, size: 0, state: 'waiting', counts: {} });
  for (const t of targets) {
    counts[t.state] = (counts[t.state] ?? 0) + 1;
    if (FAILED.has(t.state)) failures++;
    if (t.wave < 0) continue;
    while (waves.length <= t.wave) waves.push({ index: waves.length, size: 0, state: 'waiting', counts: {} });
    const w = waves[t.wave]!;
    w.size++;
    w.counts[t.state] = (w.counts[t.state] ?? 0) + 1;
  }
  for (const w of waves) {
    const done = Object.keys(w.counts).every((s) => TERMINAL.has(s as UpdateState));
    if (w.size === 0 || w.index < row.currentWave) w.state = 'done';
    else if (w.index === row.currentWave) w.state = done ? 'done' : 'running';
    else w.state = 'waiting';
  }
  const view: RolloutView = {
    id: row.id, artifactId: row.artifactId, version: row.version, url: row.url, size: row.size, sha256: row.sha256, selector: row.selector,
    waveSpec: row.waveSpec, maxFailures: row.maxFailures, allowDowngrade: row.allowDowngrade, state: row.state, reason: row.reason,
    currentWave: row.currentWave, failures, createdBy: row.createdBy, createdAt: iso(row.createdAt), updatedAt: iso(row.updatedAt),
    finishedAt: row.finishedAt == null ? null : iso(row.finishedAt), counts, total: targets.length, waves,
  };
  if (withTargets) {
    view.targets = targets.map((t) => ({
      agentId: t.agentId, agentName: t.agentName, wave: t.wave, state: t.state, reason: t.reason, fromVersion: t.fromVersion, updatedAt: iso(t.updatedAt),
    }));
  }
  return view;
}
