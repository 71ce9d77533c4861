import type { AuditEvent } from '../auth/audit.js';
import type { Logger } from '../log.js';
import type { Execution, Task } from './model.js';

export interface TakeoverDeps {
  repo: {
    claimFrom(deadNode: string, newNode: string, limit: number): Promise<string[]>;
    loadOwned(taskIds: readonly string[], node: string): Promise<{ tasks: Task[]; executions: Execution[] }>;
  };
  scheduler: { takeOver(tasks: Task[], executions: Execution[]): Promise<{ tasks: number; resumed: number }> };
  relay: { taken(from: string, taskIds: string[]): void };
  audit: { record(e: AuditEvent): Promise<void> };
  tasksTakenOver: { inc(labels: { direction: 'in' }, n: number): void };
  nodeId: string;
  /** Tasks claimed per transaction (MUSTER_TAKEOVER_BATCH_TASKS). */
  batchTasks: number;
  log: Logger;
}

/**
 * Cluster: the running tasks of a dead node move to this one (the dead-node sweep calls
 * `takeOver`, Cluster.onNodeLost). They are claimed a batch at a time (compare-and-set in the
 * database: a task another node took meanwhile is not taken twice), every other node is told
 * (exec.taken), and the scheduler restores them as a restart would. Counted and audited once per
 * task.
 *
 * A claimed batch whose restore failed (the database went away between the claim and the read)
 * is no longer the dead node's, so the next sweep would not find it: it stays `pending` and
 * `retry` (every lease TTL) restores it until it runs here. Restores run one at a time, so the
 * sweep and the retry never restore a task twice.
 */
export class Takeover {
  /** Claimed task id → the node it was taken from, until the scheduler holds it. */
  private readonly unrestored = new Map<string, string>();
  private restoring: Promise<void> = Promise.resolve();

  constructor(private readonly d: TakeoverDeps) {}

  /** Whether claimed tasks wait for a restore that failed. */
  get pending(): boolean {
    return this.unrestored.size > 0;
  }

  /** Takes over every running task `dead` owns; throws (for the sweep to call again) on a failure. */
  async takeOver(dead: string): Promise<void> {
    for (;;) {
      const ids = await this.d.repo.claimFrom(dead, this.d.nodeId, this.d.batchTasks);
      if (ids.length === 0) return;
      for (const id of ids) this.unrestored.set(id, dead);
      await this.restore(dead, ids);
    }
  }

  /** Restores the claimed tasks a failed restore left behind; false while that still fails. */
  async retry(): Promise<boolean> {
    const byNode = new Map<string, string[]>();
    for (const [id, dead] of this.unrestored) byNode.set(dead, [...(byNode.get(dead) ?? []), id]);
    for (const [dead, ids] of byNode) {
      try {
        await this.restore(dead, ids);
      } catch (err) {
        this.d.log.warn({ err, from: dead, tasks: ids.length }, 'could not restore tasks taken over from a lost server node; trying again');
        return false;
      }
    }
    return true;
  }

  private restore(dead: string, ids: string[]): Promise<void> {
    const run = this.restoring.then(() =>
      this.restoreNow(
        dead,
        ids.filter((id) => this.unrestored.has(id)),
      ),
    );
    this.restoring = run.catch(() => undefined);
    return run;
  }

  private async restoreNow(dead: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const { log } = this.d;
    // First, so console nodes register their watches before the agents resend output here.
    this.d.relay.taken(dead, ids);
    const { tasks, executions } = await this.d.repo.loadOwned(ids, this.d.nodeId);
    const r = await this.d.scheduler.takeOver(tasks, executions);
    // Restored, or owned by another node now (a compare-and-set of theirs won after a reopen): done either way.
    for (const id of ids) this.unrestored.delete(id);
    this.d.tasksTakenOver.inc({ direction: 'in' }, r.tasks);
    log.warn({ from: dead, tasks: r.tasks, executions: executions.length, resumed: r.resumed }, 'cluster: took over the running tasks of a lost server node');
    for (const t of tasks) {
      await this.d.audit
        .record({
          actor: { username: 'system', role: null, ip: null },
          action: 'task.takeover',
          targetType: 'task',
          targetId: t.id,
          details: { from: dead, to: this.d.nodeId, name: t.name },
        })
        .catch((err: unknown) => log.error({ err, taskId: t.id }, 'could not audit a task takeover'));
    }
  }
}
