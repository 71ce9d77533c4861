import type { Fleet } from '../fleet/fleet.js';
import type { NodeLink } from './node-link.js';

const KIND = 'fleet.enroll-open';
/** A live node answers in milliseconds; one that does not answer in this long is not counted. */
export const ENROLL_OPEN_TIMEOUT_MS = 2000;

/**
 * Open enrollments across the cluster. Only the node that claimed an enrollment knows whether it is
 * still open (its welcome, which carried the secret, not answered yet, or its undo not done:
 * Fleet.enrollmentInProgress). A retry of that agent with its enrollment token on any other node
 * asks the others (`fleet.enroll-open` over the node link), so every node answers it the same way:
 * 503 + Retry-After while the enrollment is undecided, never 401 as if the agent's credentials were
 * wrong. On a single node nobody else is asked.
 */
export class EnrollmentPeers {
  private readonly unsub: () => void;

  constructor(
    private readonly d: {
      link: NodeLink;
      fleet: Pick<Fleet, 'enrollmentInProgress'>;
      /** Nodes in the registry now (this one included). */
      nodes(): string[];
    },
  ) {
    this.unsub = d.link.handle(KIND, (m) => {
      const a = (m as { a?: unknown } | null)?.a;
      return typeof a === 'string' && d.fleet.enrollmentInProgress(a);
    });
  }

  /** Whether another live node holds an open enrollment of `agentId` (a node that does not answer counts as no). */
  async openElsewhere(agentId: string): Promise<boolean> {
    const others = this.d.nodes().filter((n) => n !== this.d.link.nodeId);
    if (!others.length) return false;
    const answers = await Promise.all(
      others.map((n) =>
        this.d.link.request(n, KIND, { a: agentId }, undefined, ENROLL_OPEN_TIMEOUT_MS).then(
          (r) => r === true,
          () => false,
        ),
      ),
    );
    return answers.includes(true);
  }

  close(): void {
    this.unsub();
  }
}
