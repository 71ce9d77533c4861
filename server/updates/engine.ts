import { randomUUID } from 'node:crypto';
import type { Hello, RolloutView, RolloutWaveView, UpdateState } from '../../protocol/index.js';
import type { Bus } from '../bus/bus.js';
import type { AgentCommands } from '../cluster/agent-commands.js';
import type { Leases } from '../cluster/lease.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { Fleet } from '../fleet/fleet.js';
import type { AgentRecord } from '../fleet/repo.js';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { gateView, WaveEngine, type Live, type WaveDriver } from '../waves/engine.js';
import { LeasedWaves } from '../waves/leased.js';
import type { WaveSpec } from '../waves/plan.js';
import type { RolloutRow, TargetRow, UpdateRepo } from './repo.js';

const TERMINAL: ReadonlySet<UpdateState> = new Set(['succeeded', 'failed', 'rolled_back', 'skipped']);
const FAILED: ReadonlySet<UpdateState> = new Set(['failed', 'rolled_back']);
const DONE: ReadonlySet<UpdateState> = new Set(['succeeded']);
/** States in which an agent that reconnects on its old version has lost the update (no marker yet). */
const BEFORE_SWITCH: ReadonlySet<UpdateState> = new Set(['downloading', 'verifying', 'installing']);

export interface RolloutPackage {
  artifactId: string | null;
  version: string;
  url: string | null;
  size: number;
  sha256: string;
  signature: string;
  /** CPU architecture the package is for (from its file name); agents of another arch are skipped. */
  arch: string | null;
}

export interface NewRollout extends RolloutPackage {
  selector: string;
  waves: WaveSpec[];
  maxFailures: number;
  allowDowngrade: boolean;
  soakSeconds: number;
  approval: boolean;
  createdBy: string;
}

/** Node-addressed kinds (server/cluster/node-link.ts) of rollouts across nodes. */
const CALL = 'waves.rollout';
/** Agent node → every node: an agent connected here (`v`: its version, `u`: it can update itself). */
const HELLO = 'rollout.hello';
/** Agent node → every node: an agent's socket here closed. */
const BYE = 'rollout.bye';
/** Agent node → every node: an agent's update.status (the node driving rollouts records it). */
const STATUS = 'rollout.status';

/** Targets whose `update` went out on the current connection of their agent. */
type Sent = Set<string>;
type RolloutLive = Live<RolloutRow, TargetRow, Sent>;

/** Whether a target in `from` may move to `to`: terminal states stay, except a late success or rollback after a failure. */
function allowed(from: UpdateState, to: UpdateState): boolean {
  if (from === to) return false;
  if (!TERMINAL.has(from)) return true;
  return from === 'failed' && (to === 'succeeded' || to === 'rolled_back');
}

/**
 * Drives rollouts on the wave engine (server/waves/engine.ts): sends `update` to each wave's
 * agents, follows their update.status reports and reconnects, fails targets not back with the
 * new version within updateTimeoutSec. Skips, at creation, agents already on the version, of
 * another architecture, or that cannot update themselves. Changes are published on the bus as
 * `rollout.updated`; failures and pauses as `rollout.event`.
 */
export class RolloutEngine {
  private readonly waves: WaveEngine<RolloutRow, TargetRow, Sent, RolloutView>;
  /** Agents that said in hello they cannot update themselves (run from a checkout, not a package). */
  private readonly cannotUpdate = new Set<string>();
  /** agentId → the node its last hello came from (a bye from another node is an older socket's). */
  private readonly where = new Map<string, string>();
  /** The runs under the `waves` lease: pause, resume, approve, cancel and view go straight to it. */
  readonly runs: LeasedWaves<RolloutRow, TargetRow, Sent, RolloutView, NewRollout>;
  private readonly unsubs: (() => void)[] = [];

  constructor(
    private readonly d: {
      repo: UpdateRepo;
      fleet: Fleet;
      /** Reaches an agent on whichever node holds its socket. */
      commands: Pick<AgentCommands, 'send'>;
      /** The `waves` lease: only its holder drives rollouts (always held on one node). */
      leases: Leases;
      link: NodeLink;
      bus: Bus;
      log: Logger;
      metrics: Metrics;
      updateTimeoutSec: number;
      downloadPath: (artifactId: string) => string;
      tickMs?: number;
      retry?: { initialMs: number; maxMs: number };
    },
  ) {
    const { repo, fleet, bus, metrics } = d;
    const driver: WaveDriver<RolloutRow, TargetRow, Sent> = {
      noun: 'rollout',
      terminal: TERMINAL,
      failed: FAILED,
      done: DONE,
      pending: 'pending',
      skipped: 'skipped',
      store: repo.rollouts,
      restore: async () => new Set(),
      target: (row, a, wave, skipReason, now) => ({
        rolloutId: row.id,
        agentId: a.id,
        agentName: a.name,
        wave,
        state: skipReason ? 'skipped' : 'pending',
        reason: skipReason,
        fromVersion: a.version,
        startedAt: null,
        updatedAt: now,
      }),
      starting: (_l, t) => {
        t.fromVersion = fleet.get(t.agentId)?.version ?? t.fromVersion;
      },
      send: (l, t) => this.send(l, t),
      // Targets whose update went out stay: the agent reports their outcome.
      cancels: (l, t) => t.state === 'pending' && (t.startedAt == null || !l.x.has(t.agentId)),
      allowed,
      changed: (l, t) => {
        if (TERMINAL.has(t.state)) {
          metrics.rolloutTargets.inc({ result: t.state });
          l.x.delete(t.agentId);
        }
        if (FAILED.has(t.state)) {
          bus.publish('rollout.event', {
            rolloutId: l.row.id,
            version: l.row.version,
            event: t.state === 'failed' ? 'target.failed' : 'target.rolled_back',
            agentId: t.agentId,
            agentName: t.agentName,
            reason: t.reason,
          });
        }
      },
      paused: (l) =>
        bus.publish('rollout.event', { rolloutId: l.row.id, version: l.row.version, event: 'paused', agentId: null, agentName: null, reason: l.row.reason }),
      tick: (l, now) => {
        const limit = d.updateTimeoutSec * 1000;
        for (const t of l.targets.values()) {
          if (t.startedAt != null && !TERMINAL.has(t.state) && now - t.startedAt > limit) {
            this.waves.setTarget(l, t, 'failed', `agent not back with version ${l.row.version} within ${d.updateTimeoutSec} s (last state: ${t.state})`);
          }
        }
      },
      publish: (row) => bus.publish('rollout.updated', { rolloutId: row.id }),
      view: rolloutView,
    };
    this.runs = new LeasedWaves<RolloutRow, TargetRow, Sent, RolloutView, NewRollout>(driver, {
      leases: d.leases,
      link: d.link,
      log: d.log,
      kind: CALL,
      tickMs: d.tickMs,
      retry: d.retry,
      agents: (ids) => ids.map((id) => fleet.get(id)).filter((x): x is AgentRecord => x !== undefined),
      createHere: (input, candidates) => this.createHere(input, candidates),
    });
    this.waves = this.runs.engine;
  }

  async start(): Promise<void> {
    const { link, fleet } = this.d;
    const h = (kind: string, fn: (meta: never, from: string) => unknown) => this.unsubs.push(link.handle(kind, (m, _data, from) => fn(m as never, from)));
    h(HELLO, (m: { a: string; v: string; u: boolean }, from) => {
      if (!fleet.isOnline(m.a)) this.hello(m.a, m.v, m.u, from);
    });
    h(BYE, (m: { a: string }, from) => {
      if (!fleet.isOnline(m.a) && this.where.get(m.a) === from) this.bye(m.a);
    });
    h(STATUS, (m: { a: string; r: string; s: UpdateState; why?: string }) => {
      if (this.runs.holds()) void this.recordReport(m.a, m.r, m.s, m.why);
    });
    // Connect hooks run once the welcome is written, so commands may go out at once.
    fleet.onConnect((agentId, hello) => {
      const can = hello.capabilities.includes('update');
      this.hello(agentId, hello.agentVersion, can, link.nodeId);
      link.broadcast(HELLO, { a: agentId, v: hello.agentVersion, u: can });
    });
    fleet.onDisconnect((agentId) => {
      if (this.where.get(agentId) === link.nodeId) this.bye(agentId);
      link.broadcast(BYE, { a: agentId });
    });
    await this.runs.start();
  }

  async stop(): Promise<void> {
    for (const u of this.unsubs.splice(0)) u();
    await this.runs.stop();
  }

  /** Whether this node drives rollouts now (holds the `waves` lease; always on one node). */
  drives(): boolean {
    return this.runs.holds();
  }

  private hello(agentId: string, version: string, canUpdate: boolean, node: string): void {
    this.where.set(agentId, node);
    if (canUpdate) this.cannotUpdate.delete(agentId);
    else this.cannotUpdate.add(agentId);
    if (this.runs.holds()) this.onConnect(agentId, version);
  }

  private bye(agentId: string): void {
    this.where.delete(agentId);
    for (const l of this.waves.runs()) l.x.delete(agentId);
  }

  /** Why an agent would be skipped by a rollout of this package (null: it would be updated). */
  skipReason(pkg: { version: string; arch: string | null }, a: AgentRecord): string | null {
    if (a.version === pkg.version) return `already at ${pkg.version}`;
    if (pkg.arch && a.arch !== pkg.arch) return `package is for ${pkg.arch}, agent is ${a.arch}`;
    if (this.cannotUpdate.has(a.id)) return 'agent cannot update itself (not installed from a package)';
    return null;
  }

  /** The rollout that is active now, if any (only one runs at a time), on the node driving rollouts. */
  activeRollout(): RolloutRow | null {
    for (const l of this.waves.runs()) if (WaveEngine.active(l.row.state)) return l.row;
    return null;
  }

  /** The id of the active rollout, if any, on any node (another node's is read from the database). */
  async activeRolloutId(): Promise<string | null> {
    return (await this.runs.activeWhere(() => true))?.id ?? null;
  }

  /** Creates a rollout over the agents `candidates` (already filtered by selector) and starts wave 0, on the node driving rollouts. */
  async create(input: NewRollout, candidates: AgentRecord[]): Promise<RolloutRow> {
    return this.runs.create(input, candidates);
  }

  private async createHere(input: NewRollout, candidates: AgentRecord[]): Promise<RolloutRow> {
    const active = this.activeRollout();
    if (active) throw new ApiError('conflict', `rollout ${active.id} is ${active.state}; cancel it or let it finish first`, 409, { rolloutId: active.id });
    const now = Date.now();
    const row: RolloutRow = {
      id: randomUUID(),
      artifactId: input.artifactId,
      version: input.version,
      url: input.url,
      size: input.size,
      sha256: input.sha256,
      signature: input.signature,
      selector: input.selector,
      waveSpec: input.waves,
      maxFailures: input.maxFailures,
      allowDowngrade: input.allowDowngrade,
      state: 'running',
      reason: null,
      currentWave: 0,
      failureBase: 0,
      soakSeconds: input.soakSeconds,
      approval: input.approval,
      waveDoneAt: null,
      createdBy: input.createdBy,
      createdAt: now,
      updatedAt: now,
      finishedAt: null,
    };
    const { sizes } = await this.waves.create(row, new Set(), candidates, (a) => this.skipReason(input, a));
    this.d.log.info({ rolloutId: row.id, version: row.version, waves: sizes }, 'rollout created');
    return row;
  }

  /** An agent's update.status for one of its targets (recorded by the node driving rollouts). */
  async report(agentId: string, rolloutId: string, state: UpdateState, reason: string | undefined): Promise<void> {
    if (this.runs.holds()) return this.recordReport(agentId, rolloutId, state, reason);
    // Every node hears it; the one holding the lease records it (between two holders it is lost:
    // the agent's next hello, or the update timeout, settles the target).
    this.d.link.broadcast(STATUS, { a: agentId, r: rolloutId, s: state, why: reason });
  }

  private async recordReport(agentId: string, rolloutId: string, state: UpdateState, reason: string | undefined): Promise<void> {
    if (state === 'pending' || state === 'skipped') return;
    const l = this.waves.get(rolloutId);
    if (l) {
      const t = l.targets.get(agentId);
      if (!t || t.startedAt == null) return;
      if (t.state === 'failed' && state === 'failed' && reason) {
        // The server had already failed it (e.g. it came back on the old version); the agent knows why.
        t.reason = reason;
        this.waves.touch(l, t);
        return;
      }
      this.waves.setTarget(l, t, state, reason ?? null);
      this.waves.advance(l);
      return;
    }
    // A finished rollout: still record a late outcome (e.g. rolled_back after a timeout).
    const t = await this.d.repo.rollouts.getTarget(rolloutId, agentId);
    const reasonOnly = t?.state === 'failed' && state === 'failed' && Boolean(reason);
    if (!t || t.startedAt == null || (!reasonOnly && !allowed(t.state, state))) return;
    Object.assign(t, { state, reason: reason ?? null, updatedAt: Date.now() });
    await this.d.repo.rollouts.updateTarget(t);
    this.d.bus.publish('rollout.updated', { rolloutId });
  }

  async list(limit: number, offset: number): Promise<{ items: RolloutView[]; total: number }> {
    return this.runs.views(await this.d.repo.rollouts.list(limit, offset));
  }

  /* ---------------- internals ---------------- */

  private onConnect(agentId: string, agentVersion: Hello['agentVersion']): void {
    for (const l of [...this.waves.runs()]) {
      const t = l.targets.get(agentId);
      if (!t || t.startedAt == null) continue;
      if (agentVersion === l.row.version) {
        if (t.state !== 'succeeded' && (!TERMINAL.has(t.state) || t.state === 'failed')) this.waves.setTarget(l, t, 'succeeded', null);
      } else if (t.state === 'pending') {
        if (l.row.state !== 'cancelled') this.send(l, t);
      } else if (BEFORE_SWITCH.has(t.state)) {
        this.waves.setTarget(l, t, 'failed', `agent came back on ${agentVersion} during ${t.state}; the update did not complete`);
      }
      // 'restarting': the agent reports the outcome from its marker (failed, rolled_back) itself.
      this.waves.advance(l);
    }
  }

  private send(l: RolloutLive, t: TargetRow): void {
    const r = l.row;
    const sent = this.d.commands.send(t.agentId, {
      type: 'update',
      rolloutId: r.id,
      version: r.version,
      url: r.url ?? this.d.downloadPath(r.artifactId ?? ''),
      size: r.size,
      sha256: r.sha256,
      signature: r.signature,
      allowDowngrade: r.allowDowngrade,
    });
    if (sent) l.x.add(t.agentId);
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
    id: row.id,
    artifactId: row.artifactId,
    version: row.version,
    url: row.url,
    size: row.size,
    sha256: row.sha256,
    selector: row.selector,
    waveSpec: row.waveSpec,
    maxFailures: row.maxFailures,
    allowDowngrade: row.allowDowngrade,
    state: row.state,
    reason: row.reason,
    currentWave: row.currentWave,
    failures,
    ...gateView(row),
    createdBy: row.createdBy,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
    finishedAt: row.finishedAt == null ? null : iso(row.finishedAt),
    counts,
    total: targets.length,
    waves,
  };
  if (withTargets) {
    view.targets = targets.map((t) => ({
      agentId: t.agentId,
      agentName: t.agentName,
      wave: t.wave,
      state: t.state,
      reason: t.reason,
      fromVersion: t.fromVersion,
      updatedAt: iso(t.updatedAt),
    }));
  }
  return view;
}
