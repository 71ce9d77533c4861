import type { Leases } from '../cluster/lease.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { ErrorCode } from '../../protocol/index.js';
import type { AgentRecord } from '../fleet/repo.js';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../log.js';
import { WaveEngine, type WaveDriver, type WaveRun, type WaveStore, type WaveTarget } from './engine.js';

/** A call forwarded to the node driving wave runs waits this long for its answer (database writes there). */
export const WAVE_CALL_TIMEOUT_MS = 20_000;

/** An ApiError carried in a node message's answer. */
interface Refusal {
  refused: { code: ErrorCode; message: string; status: number; details?: Record<string, unknown> };
}
interface Answer {
  r: unknown;
}

/**
 * Wave runs (rollouts, file distributions) are driven by one node of the cluster: the holder of the
 * `waves` lease (server/cluster/lease.ts). On gaining it, a node restores the active runs from the
 * database (`resume`, as at a start) and drives them; on losing it, it stops (`suspend`). A call
 * (create, pause, resume, approve, cancel) made on any node runs on the holder: here when this node
 * holds the lease, else forwarded over NodeLink as the kind `<kind>` (e.g. `waves.rollout`), whose
 * handler refuses unless it holds the lease. Refusals (ApiError: 404, 409 …) come back as they are.
 * On a single node the lease is always held: every call runs here, nothing is forwarded.
 */
export class WaveLease<Op extends string> {
  private held = false;
  /** Gains and losses in the order they happened (a restore finishes before a suspend starts). */
  private turns: Promise<void> = Promise.resolve();
  private readonly unsubs: (() => void)[] = [];

  constructor(
    private readonly d: {
      leases: Leases;
      link: NodeLink;
      log: Logger;
      /** Node message kind of forwarded calls, e.g. `waves.rollout`. */
      kind: string;
      /** This node took the lease: restore the active runs from the database and drive them. */
      resume(): Promise<void>;
      /** This node lost the lease: stop driving (forget the runs). */
      suspend(): void;
      /** Runs a call on this node (it holds the lease); its answer must be JSON. */
      run(op: Op, args: unknown): Promise<unknown>;
    },
  ) {}

  /** Whether this node drives the runs now (the lease's own clock too: a holder that could not renew stops before it hears so). */
  holds(): boolean {
    return this.held && this.d.leases.held('waves');
  }

  async start(): Promise<void> {
    const { leases, link, kind } = this.d;
    this.unsubs.push(
      link.handle(kind, async (m) => {
        const { op, args } = m as { op: Op; args: unknown };
        await this.turns; // just took the lease: the runs are restored before any call
        if (!this.holds()) throw new Error(`node ${link.nodeId} does not drive wave runs now`);
        try {
          return { r: await this.d.run(op, args) } satisfies Answer;
        } catch (err) {
          if (err instanceof ApiError) return { refused: { code: err.code, message: err.message, status: err.status, details: err.details } } satisfies Refusal;
          throw err;
        }
      }),
    );
    this.unsubs.push(leases.watch('waves', (h) => this.turn(h)));
    if (leases.held('waves')) this.turn(true);
    await this.turns;
  }

  /** Stops driving (shutdown). */
  async stop(): Promise<void> {
    for (const u of this.unsubs.splice(0)) u();
    await this.turns;
  }

  private turn(held: boolean): void {
    this.turns = this.turns.then(async () => {
      if (held === this.held) return;
      this.held = held;
      if (held) {
        this.d.log.info(`${this.d.kind}: this node drives the wave runs now (cluster lease); restoring active runs`);
        try {
          await this.d.resume();
        } catch (err) {
          this.d.log.error({ err }, `${this.d.kind}: could not restore the active runs`);
        }
      } else {
        this.d.log.warn(`${this.d.kind}: lease lost; this node stops driving wave runs`);
        this.d.suspend();
      }
    });
  }

  /** Runs a call where the runs are driven: here, or on the lease holder. */
  async call(op: Op, args: unknown): Promise<unknown> {
    await this.turns; // a restore under way finishes first
    if (this.holds()) return this.d.run(op, args);
    const holder = await this.d.leases.holder('waves').catch(() => null);
    if (holder == null || holder === this.d.link.nodeId) {
      throw new ApiError(
        'unavailable',
        'no server node drives rollouts and distributions right now (the cluster lease is changing hands); retry in a few seconds',
      );
    }
    let a: Answer | Refusal;
    try {
      a = (await this.d.link.request(holder, this.d.kind, { op, args }, undefined, WAVE_CALL_TIMEOUT_MS)) as Answer | Refusal;
    } catch (err) {
      throw new ApiError('unavailable', `the node driving rollouts and distributions (${holder}) did not answer: ${(err as Error).message}; retry`);
    }
    if ('refused' in a) throw new ApiError(a.refused.code, a.refused.message, a.refused.status, a.refused.details);
    return a.r;
  }
}

/** The calls every kind of run in waves takes, made where the runs are driven. */
export type WaveOp = 'create' | 'pause' | 'resume' | 'approve' | 'cancel';

/**
 * One kind of run in waves in a cluster: the wave engine (engine.ts) driven under the `waves` lease
 * (WaveLease above). Gaining the lease restores the active runs, losing it forgets them (after the
 * kind's `suspending`, which ends what it has in flight); the engine's timer (soak, approval, target
 * timeouts) runs only while the lease is held; create, pause, resume, approve and cancel run on the
 * holder wherever they are called. What stays with each kind (rollouts, file distributions) is its
 * driver (what a target gets), how a run is created, and its own messages.
 */
export class LeasedWaves<R extends WaveRun, T extends WaveTarget, X, V, In> {
  readonly engine: WaveEngine<R, T, X, V>;
  private readonly lease: WaveLease<WaveOp>;

  constructor(
    driver: WaveDriver<R, T, X>,
    private readonly d: {
      leases: Leases;
      link: NodeLink;
      log: Logger;
      /** Node message kind of forwarded calls, e.g. `waves.rollout`. */
      kind: string;
      tickMs?: number;
      retry?: { initialMs: number; maxMs: number };
      /** The agents a forwarded create names (candidates travel as ids). */
      agents(ids: string[]): AgentRecord[];
      /** Creates a run here (this node holds the lease). */
      createHere(input: In, candidates: AgentRecord[]): Promise<R>;
      /** After the active runs were restored on gaining the lease (send what waits for agents connected anywhere). */
      restored?(): void;
      /** Before the runs are forgotten on losing the lease. */
      suspending?(): void;
    },
  ) {
    this.engine = new WaveEngine<R, T, X, V>(driver, { log: d.log, tickMs: d.tickMs, retry: d.retry, driving: () => this.lease.holds() });
    this.lease = new WaveLease<WaveOp>({
      leases: d.leases,
      link: d.link,
      log: d.log,
      kind: d.kind,
      resume: async () => {
        await this.engine.start();
        d.restored?.();
      },
      suspend: () => {
        d.suspending?.();
        this.engine.suspend();
      },
      run: (op, args) => this.run(op, args),
    });
    this.store = driver.store;
  }

  private readonly store: WaveStore<R, T>;

  /** Takes part in the `waves` lease (restores the active runs when this node holds it). */
  start(): Promise<void> {
    return this.lease.start();
  }

  async stop(): Promise<void> {
    await this.lease.stop();
    await this.engine.stop();
  }

  /** Whether this node drives the runs now (holds the `waves` lease; always on one node). */
  holds(): boolean {
    return this.lease.holds();
  }

  /** The active run matching `match`: from memory on the holder, else from the database. */
  async activeWhere(match: (row: R) => boolean): Promise<R | null> {
    if (!this.holds()) return (await this.store.active()).find(match) ?? null;
    for (const l of this.engine.runs()) if (WaveEngine.active(l.row.state) && match(l.row)) return l.row;
    return null;
  }

  /** Creates a run over `candidates` (already filtered by selector) on the node driving runs. */
  async create(input: In, candidates: AgentRecord[]): Promise<R> {
    return (await this.lease.call('create', { input, agents: candidates.map((c) => c.id) })) as R;
  }

  async pause(id: string, by: string): Promise<R> {
    return (await this.lease.call('pause', { id, by })) as R;
  }

  async resume(id: string): Promise<R> {
    return (await this.lease.call('resume', { id })) as R;
  }

  async approve(id: string): Promise<R> {
    return (await this.lease.call('approve', { id })) as R;
  }

  async cancel(id: string, by: string): Promise<R> {
    return (await this.lease.call('cancel', { id, by })) as R;
  }

  /** The run as the API shows it (`withTargets` adds every target). */
  view(id: string, withTargets: boolean): Promise<V> {
    return this.engine.view(id, withTargets);
  }

  /** A page of runs (rows read from the database) as the API lists them. */
  async views(page: { items: R[]; total: number }): Promise<{ items: V[]; total: number }> {
    return { items: await Promise.all(page.items.map((r) => this.view(r.id, false))), total: page.total };
  }

  /** A call on this node (it holds the lease). */
  private async run(op: WaveOp, args: unknown): Promise<unknown> {
    const a = args as { id: string; by: string; input: In; agents: string[] };
    let row: R;
    if (op === 'create') row = await this.d.createHere(a.input, this.d.agents(a.agents));
    else if (op === 'pause') row = this.engine.pause(a.id, a.by);
    else if (op === 'resume') row = this.engine.resume(a.id);
    else if (op === 'approve') row = this.engine.approve(a.id);
    else row = this.engine.cancel(a.id, a.by);
    // The caller (maybe on another node) reads the run from the database next.
    await this.engine.flushed();
    return { ...row };
  }
}
