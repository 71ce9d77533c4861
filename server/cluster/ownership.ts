import type { Knex } from 'knex';
import type { Db } from '../db/db.js';
import { transaction } from '../db/retry.js';
import { ClaimLost } from '../fleet/repo.js';

/** Cluster side of ownership: other nodes hear of a claim, and say when a newer one exists. */
export interface OwnershipPeers {
  /** This node now holds `generation` of the agent: older sockets on other nodes close. */
  claimed(agentId: string, generation: number): void;
  /** True when another node holds a newer connection than `generation`. */
  newerElsewhere(agentId: string, generation: number): boolean;
}

/**
 * Which node holds each agent's socket, and the connection generation (agents.owner_node,
 * agents.conn_generation). Recorded on one node too; the peers exist only in a cluster.
 */
export class AgentOwnership {
  constructor(
    private readonly db: Db,
    readonly nodeId: string,
    private readonly peers: OwnershipPeers | null = null,
  ) {}

  /** In a cluster presence writes are fenced by owner (a stale node's flush changes nothing). */
  get fenceNode(): string | null {
    return this.peers ? this.nodeId : null;
  }

  /**
   * Inside the connect transaction: this node owns the agent now; returns the new generation. With
   * `secretHash` (the secret the socket presented) the claim holds only while the row still carries
   * that secret: an enrollment undone since the upgrade checked it (on any node) throws ClaimLost
   * and changes nothing (see Fleet.connect).
   */
  async claim(agentId: string, trx: Knex, secretHash?: string): Promise<number> {
    const q = trx('agents').where({ id: agentId });
    if (secretHash !== undefined) q.where({ secret_hash: secretHash });
    const n = await q.update({ owner_node: this.nodeId, conn_generation: trx.raw('conn_generation + 1') });
    if (secretHash !== undefined && Number(n) !== 1) throw new ClaimLost(agentId);
    const row = (await trx('agents').where({ id: agentId }).first('conn_generation')) as { conn_generation: number | string } | undefined;
    return Number(row?.conn_generation ?? 0);
  }

  claimed(agentId: string, generation: number): void {
    this.peers?.claimed(agentId, generation);
  }

  /** Inside the disconnect write: gives the agent up unless a newer connection owns it. */
  async release(agentId: string, generation: number, trx: Knex): Promise<void> {
    await trx('agents').where({ id: agentId, conn_generation: generation, owner_node: this.nodeId }).update({ owner_node: null });
  }

  /** Every agent this node still owns is given up (start after a crash, shutdown); returns their ids. */
  async releaseAll(): Promise<string[]> {
    return transaction(this.db, async (trx) => {
      const rows = (await trx('agents').where({ owner_node: this.nodeId }).select('id')) as { id: string }[];
      if (rows.length) await trx('agents').where({ owner_node: this.nodeId }).update({ owner_node: null });
      return rows.map((r) => r.id);
    });
  }

  newerElsewhere(agentId: string, generation: number): boolean {
    return this.peers?.newerElsewhere(agentId, generation) ?? false;
  }
}
