import type { Leases } from '../cluster/lease.js';
import type { NodeLink } from '../cluster/node-link.js';
import type { ErrorCode } from '../../protocol/index.js';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../log.js';

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
