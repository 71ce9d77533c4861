import type { ServerToAgent } from '../../protocol/index.js';
import type { Fleet } from '../fleet/fleet.js';
import type { NodeLink } from './node-link.js';

const KIND = 'agent.command';
/** A command sent with `deliver` waits this long for the agent's node to say whether it went out. */
export const AGENT_COMMAND_TIMEOUT_MS = 5000;

/**
 * Messages for an agent wherever its socket is (issue 12): on this node, the fleet sends it; on
 * another node, it goes there over NodeLink (`agent.command`) and that node's fleet sends it. Used
 * by rollouts (`update`), restart and the like; the agent's answers come back through the capability
 * that asked (its own node-addressed kinds or broadcasts). On a single node: `fleet.send`.
 */
export class AgentCommands {
  private readonly unsub: () => void;

  constructor(
    private readonly d: {
      link: NodeLink;
      fleet: Pick<Fleet, 'isOnline' | 'send'>;
      /** The node holding the agent's socket (null: connected nowhere known). */
      agentNode(agentId: string): string | null;
    },
  ) {
    this.unsub = d.link.handle(KIND, (m) => {
      const { a, m: msg } = m as { a: string; m: ServerToAgent };
      return d.fleet.send(a, msg);
    });
  }

  /** Hands the message on (true), without knowing whether another node's socket takes it. */
  send(agentId: string, msg: ServerToAgent): boolean {
    if (this.d.fleet.isOnline(agentId)) return this.d.fleet.send(agentId, msg);
    const node = this.d.agentNode(agentId);
    if (node == null || node === this.d.link.nodeId) return false;
    return this.d.link.send(node, KIND, { a: agentId, m: msg });
  }

  /** Sends the message and says whether the agent's socket took it (asks the agent's node). */
  async deliver(agentId: string, msg: ServerToAgent): Promise<boolean> {
    if (this.d.fleet.isOnline(agentId)) return this.d.fleet.send(agentId, msg);
    const node = this.d.agentNode(agentId);
    if (node == null || node === this.d.link.nodeId) return false;
    try {
      return (await this.d.link.request(node, KIND, { a: agentId, m: msg }, undefined, AGENT_COMMAND_TIMEOUT_MS)) === true;
    } catch {
      return false;
    }
  }

  close(): void {
    this.unsub();
  }
}
