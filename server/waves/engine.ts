import type { WaveRunState } from '../../protocol/index.js';
import { dbFailure } from '../db/failures.js';
import type { AgentRecord } from '../fleet/repo.js';
import { ApiError, notFound } from '../http/errors.js';
import type { Logger } from '../log.js';
import { waveSizes, type WaveSpec } from './plan.js';

/** States in which a run is driven (kept in memory, restored after a restart). */
export const ACTIVE_RUN_STATES: readonly WaveRunState[] = ['running', 'paused', 'soaking', 'awaiting_approval'];
const ACTIVE: ReadonlySet<WaveRunState> = new Set(ACTIVE_RUN_STATES);

/** What the engine reads and writes of a run (a rollout, a distribution). */
export interface WaveRun {
  id: string;
  waveSpec: WaveSpec[];
  maxFailures: number;
  state: WaveRunState;
  reason: string | null;
  currentWave: number;
  /** Failures already seen when the run was last resumed: only newer ones count against maxFailures. */
  failureBase: number;
  /** Seconds to wait after a wave ends before the next starts (0: none). */
  soakSeconds: number;
  /** Whether each next wave waits for `approve`. */
  approval: boolean;
  /** When the current wave ended (soak counts from it); null while it runs. */
  waveDoneAt: number | null;
  updatedAt: number;
  finishedAt: number | null;
}

/** What the engine reads and writes of one target (an agent) of a run. */
export interface WaveTarget<S extends string = string> {
  agentId: string;
  agentName: string;
  /** Index in waveSpec; -1 for a target skipped when the run was created. */
  wave: number;
  state: S;
  reason: string | null;
  startedAt: number | null;
  updatedAt: number;
}

/** One run the engine drives: its row, its targets by agent id, and what the driver keeps beside it. */
export interface Live<R extends WaveRun, T extends WaveTarget, X> {
  row: R;
  targets: Map<string, T>;
  x: X;
}

/** Where a kind of run's rows live (server/waves/repo.ts's WaveRepo on a database). */
export interface WaveStore<R extends WaveRun, T extends WaveTarget> {
  insert(row: R, targets: T[]): Promise<void>;
  updateRun(row: R): Promise<void>;
  updateTarget(t: T): Promise<void>;
  getRun(id: string): Promise<R | null>;
  targets(id: string): Promise<T[]>;
  /** Runs in an active state (left by the previous process, or by the previous lease holder). */
  active(): Promise<R[]>;
}

/**
 * What a kind of run does to its targets (send a package, send a file revision), and where its
 * rows live. The engine owns waves, states, failures, soak, approval and the write order.
 */
export interface WaveDriver<R extends WaveRun, T extends WaveTarget, X> {
  /** `rollout`, `distribution`: in messages ("rollout is paused") and logs. */
  noun: string;
  /** Target states after which a target is done (success, failure or skip). */
  terminal: ReadonlySet<T['state']>;
  /** Target states that count as failures. */
  failed: ReadonlySet<T['state']>;
  /** Target states in which a target got what the run brings (the run did something). */
  done: ReadonlySet<T['state']>;
  /** The state of a target that still has to be sent, and of one skipped. */
  pending: T['state'];
  skipped: T['state'];
  store: WaveStore<R, T>;
  /** What the driver keeps for a restored run (null: the run cannot go on and is left alone). */
  restore(row: R, targets: Map<string, T>): Promise<X | null>;
  /** A new target row. */
  target(row: R, agent: AgentRecord, wave: number, skipReason: string | null, now: number): T;
  /** Sends the run's command to a target whose wave started (or that must get it again). */
  send(l: Live<R, T, X>, t: T): void;
  /** Called as a target's wave starts, before it is written and sent. */
  starting?(l: Live<R, T, X>, t: T): void;
  /** Whether cancelling skips this target (default: every target not yet done). */
  cancels?(l: Live<R, T, X>, t: T): boolean;
  /** Before a cancel skips targets (end what is in flight). */
  cancelling?(l: Live<R, T, X>): void;
  /** After a resume (send what was held back while paused). */
  resumed?(l: Live<R, T, X>): void;
  /** Whether a target may move from one state to another (default: from a state not terminal, to another state). */
  allowed?(from: T['state'], to: T['state']): boolean;
  /** After a target changed state (metrics, events). */
  changed?(l: Live<R, T, X>, t: T): void;
  /** After a run paused (events). */
  paused?(l: Live<R, T, X>): void;
  /** Each tick, per run: fail targets that took too long (through engine.setTarget). */
  tick?(l: Live<R, T, X>, now: number): void;
  /** The run changed: tell the consoles (throttled by the engine). */
  publish(row: R): void;
  /** The public JSON view. */
  view(row: R, targets: T[], withTargets: boolean): unknown;
}

/**
 * Drives runs in waves for any kind of target (agent updates, file distributions): splits the
 * targets into waves (plan.ts), starts each wave's targets through the driver, follows their
 * states, pauses past maxFailures, waits `soakSeconds` and/or an approval between waves, and ends
 * the run `succeeded`, `failed`, `nothing_to_do` (every target skipped: nothing was done, which is
 * not a success) or `cancelled`. Memory holds every active run (and a finished or cancelled one
 * until its targets in flight end); each change is written through in order, then published.
 */
export class WaveEngine<R extends WaveRun, T extends WaveTarget, X, V = unknown> {
  private readonly live = new Map<string, Live<R, T, X>>();
  private timer: NodeJS.Timeout | undefined;
  private writes: Promise<void> = Promise.resolve();
  private readonly publishTimers = new Map<string, NodeJS.Timeout>();
  /** Set while writes fail with the database away: since when, and how to cut the wait short (stop). */
  private failing: { since: number; wake?: () => void } | null = null;
  private stopping = false;

  constructor(
    private readonly driver: WaveDriver<R, T, X>,
    private readonly d: {
      log: Logger;
      tickMs?: number;
      now?: () => number;
      /** A write that fails because the database is away is retried after this delay, doubling up to maxMs (MUSTER_DB_RETRY_*). */
      retry?: { initialMs: number; maxMs: number };
      /** Whether this node may drive runs now (the cluster lease, checked each tick; default: always). */
      driving?: () => boolean;
    },
  ) {}

  private now(): number {
    return this.d.now ? this.d.now() : Date.now();
  }

  /** Restores the active runs and starts the timer (timeouts, soak). Again after `suspend`: the database is the truth. */
  async start(): Promise<void> {
    this.stopping = false;
    // Writes a previous term of this node queued land before the stored runs are read.
    await this.writes;
    this.live.clear();
    for (const row of await this.driver.store.active()) {
      const targets = new Map((await this.driver.store.targets(row.id)).map((t) => [t.agentId, t]));
      const x = await this.driver.restore(row, targets);
      if (x !== null) this.live.set(row.id, { row, targets, x });
    }
    this.timer = setInterval(() => this.tick(), this.d.tickMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const t of this.publishTimers.values()) clearTimeout(t);
    this.publishTimers.clear();
    // Writes still queued get one more try each; a database still away at shutdown loses them (logged).
    this.stopping = true;
    this.failing?.wake?.();
    await this.writes;
  }

  /**
   * This node no longer drives runs (another node took the cluster lease): the timer stops and the
   * runs leave memory; writes already queued still land (in order). `start` restores them again.
   */
  suspend(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const t of this.publishTimers.values()) clearTimeout(t);
    this.publishTimers.clear();
    this.live.clear();
  }

  /** Every write queued so far has ended. */
  flushed(): Promise<void> {
    return this.writes;
  }

  /** The runs in memory (active ones, and ended ones whose targets are still in flight). */
  runs(): IterableIterator<Live<R, T, X>> {
    return this.live.values();
  }

  get(id: string): Live<R, T, X> | undefined {
    return this.live.get(id);
  }

  /** Whether a run is in an active state. */
  static active(state: WaveRunState): boolean {
    return ACTIVE.has(state);
  }

  /**
   * Creates a run over `agents` (revoked ones left out; `skip` names why an agent is not updated)
   * and starts its first wave.
   */
  async create(row: R, x: X, agents: AgentRecord[], skip?: (a: AgentRecord) => string | null): Promise<{ row: R; sizes: number[] }> {
    const now = this.now();
    const sorted = agents.filter((a) => a.revokedAt == null).sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    const targets: T[] = [];
    const go: AgentRecord[] = [];
    for (const a of sorted) {
      const reason = skip?.(a) ?? null;
      if (reason) targets.push(this.driver.target(row, a, -1, reason, now));
      else go.push(a);
    }
    const sizes = waveSizes(row.waveSpec, go.length);
    let i = 0;
    sizes.forEach((size, wave) => {
      for (const a of go.slice(i, i + size)) targets.push(this.driver.target(row, a, wave, null, now));
      i += size;
    });
    await this.driver.store.insert(row, targets);
    const l: Live<R, T, X> = { row, targets: new Map(targets.map((t) => [t.agentId, t])), x };
    this.live.set(row.id, l);
    for (const t of targets) if (t.state === this.driver.skipped) this.driver.changed?.(l, t);
    const first = sizes.findIndex((n) => n > 0);
    if (first < 0) this.finish(l);
    else this.startWave(l, first);
    await this.writes;
    return { row, sizes };
  }

  pause(id: string, by: string): R {
    const l = this.mustLive(id);
    if (l.row.state !== 'running' && l.row.state !== 'soaking' && l.row.state !== 'awaiting_approval') this.refuse(l);
    this.setRun(l, { state: 'paused', reason: `paused by ${by}` });
    return l.row;
  }

  resume(id: string): R {
    const l = this.mustLive(id);
    if (l.row.state !== 'paused') this.refuse(l);
    // Failures so far were seen by whoever resumed: only new ones count against maxFailures.
    this.setRun(l, { state: 'running', reason: null, failureBase: this.failures(l) });
    this.driver.resumed?.(l);
    this.advance(l);
    return l.row;
  }

  /** Starts the next wave of a run that awaits approval. */
  approve(id: string): R {
    const l = this.mustLive(id);
    if (l.row.state !== 'awaiting_approval') this.refuse(l);
    const next = this.nextWave(l);
    if (next === null) this.finish(l);
    else this.startWave(l, next);
    return l.row;
  }

  cancel(id: string, by: string): R {
    const l = this.mustLive(id);
    if (!ACTIVE.has(l.row.state)) this.refuse(l);
    this.driver.cancelling?.(l);
    for (const t of l.targets.values()) {
      const skip = this.driver.cancels ? this.driver.cancels(l, t) : !this.driver.terminal.has(t.state);
      if (skip) this.setTarget(l, t, this.driver.skipped, `cancelled by ${by}`);
    }
    this.setRun(l, { state: 'cancelled', reason: `cancelled by ${by}`, finishedAt: this.now() });
    this.forgetIfIdle(l);
    return l.row;
  }

  /** The run as the API shows it (`withTargets` adds every target). */
  async view(id: string, withTargets: boolean): Promise<V> {
    const l = this.live.get(id);
    // A run that just left memory may still have writes queued: read it once they are stored.
    if (!l) await this.writes;
    const row = l?.row ?? (await this.driver.store.getRun(id));
    if (!row) throw notFound(this.driver.noun);
    const targets = l ? [...l.targets.values()] : await this.driver.store.targets(id);
    return this.driver.view(row, targets, withTargets) as V;
  }

  /** Moves a target to a state (if the driver allows it); pauses the run past maxFailures. */
  setTarget(l: Live<R, T, X>, t: T, state: T['state'], reason: string | null): void {
    const allowed = this.driver.allowed ? this.driver.allowed(t.state, state) : t.state !== state && !this.driver.terminal.has(t.state);
    if (!allowed) return;
    t.state = state;
    t.reason = reason;
    this.touch(l, t);
    this.driver.changed?.(l, t);
    if (this.driver.failed.has(state) && l.row.state === 'running') {
      const failures = this.failures(l) - l.row.failureBase;
      if (failures > l.row.maxFailures) {
        this.setRun(l, { state: 'paused', reason: `${failures} failure(s) exceed maxFailures ${l.row.maxFailures}; resume to go on` });
        this.d.log.warn({ id: l.row.id, failures }, `${this.driver.noun} paused after failures`);
      }
    }
  }

  /** Writes a target as it is now and publishes the run. */
  touch(l: Live<R, T, X>, t: T): void {
    t.updatedAt = this.now();
    const copy = { ...t };
    this.write(() => this.driver.store.updateTarget(copy));
    this.publish(l);
  }

  /**
   * Moves the run on: when the current wave is over, waits the soak time and/or an approval, then
   * starts the next wave; finishes after the last.
   */
  advance(l: Live<R, T, X>): void {
    const { row } = l;
    if (row.state !== 'running' && row.state !== 'soaking') return;
    for (const t of l.targets.values()) if (t.wave === row.currentWave && !this.driver.terminal.has(t.state)) return;
    const next = this.nextWave(l);
    if (next === null) {
      this.finish(l);
      return;
    }
    const now = this.now();
    const doneAt = row.waveDoneAt ?? now;
    if (row.soakSeconds > 0 && now < doneAt + row.soakSeconds * 1000) {
      if (row.state !== 'soaking' || row.waveDoneAt == null) {
        this.setRun(l, { state: 'soaking', waveDoneAt: doneAt, reason: `wave ${row.currentWave + 1} done; next wave after ${row.soakSeconds} s` });
      }
      return;
    }
    if (row.approval) {
      this.setRun(l, { state: 'awaiting_approval', waveDoneAt: doneAt, reason: `wave ${row.currentWave + 1} done; approve to start wave ${next + 1}` });
      return;
    }
    this.startWave(l, next);
  }

  /* ---------------- internals ---------------- */

  private refuse(l: Live<R, T, X>): never {
    throw new ApiError('conflict', `${this.driver.noun} is ${l.row.state}`);
  }

  private mustLive(id: string): Live<R, T, X> {
    const l = this.live.get(id);
    if (!l || !ACTIVE.has(l.row.state)) throw new ApiError('conflict', `${this.driver.noun} is not active`, 409);
    return l;
  }

  private nextWave(l: Live<R, T, X>): number | null {
    let next = Infinity;
    for (const t of l.targets.values()) if (t.wave > l.row.currentWave && t.wave < next) next = t.wave;
    return Number.isFinite(next) ? next : null;
  }

  private tick(): void {
    // A node whose lease ran out (it could not renew in time) stops at once, before it is told.
    if (this.d.driving && !this.d.driving()) return;
    const now = this.now();
    for (const l of [...this.live.values()]) {
      this.driver.tick?.(l, now);
      this.advance(l);
      this.forgetIfIdle(l);
    }
  }

  /** An ended run leaves memory once none of its targets is in flight. */
  private forgetIfIdle(l: Live<R, T, X>): void {
    if (ACTIVE.has(l.row.state)) return;
    for (const t of l.targets.values()) if (t.startedAt != null && !this.driver.terminal.has(t.state)) return;
    this.live.delete(l.row.id);
  }

  private startWave(l: Live<R, T, X>, wave: number): void {
    const now = this.now();
    this.setRun(l, { state: 'running', reason: null, currentWave: wave, waveDoneAt: null });
    this.d.log.info({ id: l.row.id, wave }, `${this.driver.noun} wave starting`);
    for (const t of l.targets.values()) {
      if (t.wave !== wave || t.state !== this.driver.pending) continue;
      t.startedAt = now;
      this.driver.starting?.(l, t);
      this.touch(l, t);
      this.driver.send(l, t);
    }
  }

  private finish(l: Live<R, T, X>): void {
    const failures = this.failures(l);
    const targets = [...l.targets.values()];
    let state: WaveRunState = 'succeeded';
    let reason: string | null = null;
    if (failures > 0) {
      state = 'failed';
      reason = `${failures} target(s) failed`;
    } else if (!targets.some((t) => this.driver.done.has(t.state))) {
      // Every target skipped (or none at all): the operator asked for something no host got.
      // That is not a success; it says why.
      state = 'nothing_to_do';
      const why = new Map<string, number>();
      for (const t of targets) why.set(t.reason ?? 'skipped', (why.get(t.reason ?? 'skipped') ?? 0) + 1);
      const summary = [...why].map(([r, n]) => `${r}: ${n}`).join('; ');
      reason = targets.length === 0 ? 'nothing to do: no target' : `nothing to do: all ${targets.length} target(s) skipped (${summary})`.slice(0, 500);
    }
    this.setRun(l, { state, reason, finishedAt: this.now(), waveDoneAt: null });
    this.d.log.info({ id: l.row.id, state }, `${this.driver.noun} finished`);
    this.forgetIfIdle(l);
  }

  private failures(l: Live<R, T, X>): number {
    let n = 0;
    for (const t of l.targets.values()) if (this.driver.failed.has(t.state)) n++;
    return n;
  }

  private setRun(l: Live<R, T, X>, patch: Partial<WaveRun>): void {
    const pausedNow = patch.state === 'paused' && l.row.state !== 'paused';
    Object.assign(l.row, patch, { updatedAt: this.now() });
    if (pausedNow) this.driver.paused?.(l);
    const copy = { ...l.row };
    this.write(() => this.driver.store.updateRun(copy));
    this.publish(l);
  }

  /**
   * Database writes run one after another, in the order the changes happened (drivers queue theirs
   * here too). A write that fails because the database is away (dbFailure: unreachable, restarting,
   * disk full) is retried with capped backoff and the writes after it wait, so the stored run never
   * falls behind or out of order; any other error (a bug, a constraint) is logged and not retried.
   */
  write(fn: () => Promise<void>): void {
    this.writes = this.writes.then(() => this.attempt(fn));
  }

  private async attempt(fn: () => Promise<void>): Promise<void> {
    const { initialMs, maxMs } = this.d.retry ?? { initialMs: 250, maxMs: 5000 };
    for (let attempt = 1; ; attempt++) {
      try {
        await fn();
        if (this.failing) {
          this.d.log.info({ failedForMs: Date.now() - this.failing.since }, `${this.driver.noun} writes stored again`);
          this.failing = null;
        }
        return;
      } catch (err) {
        if (!dbFailure(err) || this.stopping) {
          this.d.log.error({ err }, `${this.driver.noun} write failed`);
          return;
        }
        if (!this.failing) {
          this.failing = { since: Date.now() };
          this.d.log.warn({ err, retryMaxMs: maxMs }, `${this.driver.noun} writes failing (database unavailable); retrying with backoff`);
        }
        const failing = this.failing;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(maxMs, initialMs * 2 ** Math.min(attempt - 1, 20)));
          failing.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  }

  /** At most one publish per run per 200 ms (consoles refetch on it), after the writes before it. */
  private publish(l: Live<R, T, X>): void {
    const { id } = l.row;
    if (this.publishTimers.has(id)) return;
    const row = l.row;
    const timer = setTimeout(() => {
      this.publishTimers.delete(id);
      void this.writes.then(() => this.driver.publish(row));
    }, 200);
    timer.unref();
    this.publishTimers.set(id, timer);
  }
}

/** soakSeconds, approval and, while soaking, when the next wave starts: the same in every wave run's view. */
export function gateView(row: Pick<WaveRun, 'soakSeconds' | 'approval' | 'waveDoneAt' | 'state'>): {
  soakSeconds: number;
  approval: boolean;
  nextWaveAt: string | null;
} {
  const nextWaveAt = row.state === 'soaking' && row.waveDoneAt != null ? new Date(row.waveDoneAt + row.soakSeconds * 1000).toISOString() : null;
  return { soakSeconds: row.soakSeconds, approval: row.approval, nextWaveAt };
}
