import { createHash, randomUUID } from 'node:crypto';
import { uuidv7 } from '../db/ids.js';
import { defaultTaskName, type AgentMessage, type ErrorCode, type Hello, type Stream } from '../../protocol/index.js';
import type { Actor, AuditLog } from '../auth/audit.js';
import type { Config } from '../config/config.js';
import type { AgentRecord } from '../fleet/repo.js';
import type { Fleet } from '../fleet/fleet.js';
import { ApiError, notFound } from '../http/errors.js';
import type { Logger } from '../log.js';
import { executionView, FAILURE_STATES, isFinal, taskView, type Execution, type Task, type TaskSpec } from './model.js';
import type { ExecWriteBatcher } from './write-batcher.js';
import { taskDenial } from './policy.js';
import type { ExecRepo, TaskFilter } from './repo.js';
import type { NamedExecution, Scheduler } from './scheduler.js';

export interface CreateTaskInput extends TaskSpec {
  /** Shown and searched in the history; default: the script's first meaningful line. */
  name?: string | null;
  targets: { selector: string } | { agentIds: string[] };
  concurrency?: string | null;
  maxFailures?: string | null;
  offline: 'skip' | 'queue';
  queueTtlSec: number;
  /** Set when the task runs a library script (and when a schedule fired it). */
  scriptId?: string | null;
  scriptVersion?: number | null;
  scheduleId?: string | null;
  /** Env names whose values are write-only. */
  secretEnv?: string[];
}

export interface ServiceDeps {
  config: Config;
  repo: ExecRepo;
  writer: ExecWriteBatcher;
  scheduler: Scheduler;
  /** The fleet as the scheduler sees it: in a cluster, agents on every node (ExecRelay.port). */
  fleet: Pick<Fleet, 'get' | 'isOnline' | 'send'>;
  audit: AuditLog;
  log: Logger;
  /** Resolves a selector over the in-memory fleet (throws ApiError 400 on a syntax error). */
  select(selector: string): AgentRecord[];
  /** This node (stored as the owner of the tasks created here). */
  nodeId: string;
  /** Cluster: whether a task's owner is another live node, whose scheduler settles its executions. */
  ownedElsewhere(ownerNode: string | null | undefined): boolean;
  /**
   * Cluster: seconds until a running task whose owner node has left the registry is taken over by
   * a live node (null: on one node, or the owner is this node or alive).
   */
  takeoverPendingSec(ownerNode: string | null | undefined): number | null;
  /** Cluster: cancel a task its owner node runs (answers the view, or the owner's error). */
  cancelRemote(owner: string, taskId: string, actor: Actor): Promise<unknown>;
  /** Cluster: hand an agent's exec.finished to the node that runs its task (and route its next messages there). */
  forwardReport(owner: string, agentId: string, m: AgentMessage<'exec.finished'>): void;
  /** Cluster: whether this node relays the execution's messages to its owner node. */
  relays(executionId: string): boolean;
}

/** The owner node's answer to a cancel sent from another node. */
export type RemoteCancelAnswer =
  { task: ReturnType<typeof taskView> } | { error: { code: ErrorCode; message: string; status: number; retryAfterSec?: number | undefined } };

/** The first lines of a script for list views (the whole script only in GET /api/tasks/:id). */
function scriptPreview(script: string): string {
  const lines = script.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#!'));
  const head = lines.slice(0, 3).join('\n');
  return head.length > 300 ? `${head.slice(0, 299)}…` : head;
}

/**
 * Remote execution use cases: create/cancel/rerun tasks and read them back; the agent side of the
 * protocol goes to the Scheduler, except the database lookups of results reported late.
 */
export class ExecService {
  /** Lookups of executions reported late, by id (a hello and an exec.finished may race). */
  private readonly reviving = new Map<string, Promise<Execution | undefined>>();

  constructor(private readonly d: ServiceDeps) {}

  /* ---------------- REST use cases ---------------- */

  async create(
    input: CreateTaskInput,
    actor: Actor,
    rerunOf: string | null = null,
    rerunDetails: Record<string, unknown> = {},
  ): Promise<ReturnType<typeof taskView> & { executions: unknown[] }> {
    const { config, fleet } = this.d;
    if (Buffer.byteLength(input.script) > config.maxScriptBytes) {
      throw new ApiError('payload_too_large', `script is larger than ${config.maxScriptBytes} bytes (MUSTER_MAX_SCRIPT_BYTES)`);
    }
    if (input.interpreter === 'shebang' && !input.script.startsWith('#!')) {
      throw new ApiError('bad_request', 'interpreter "shebang" needs a script starting with #!');
    }
    let agents: AgentRecord[];
    if ('selector' in input.targets) {
      agents = this.d.select(input.targets.selector);
    } else {
      const ids = [...new Set(input.targets.agentIds)];
      const unknown = ids.filter((id) => !fleet.get(id));
      if (unknown.length) throw new ApiError('bad_request', `unknown agent id(s): ${unknown.slice(0, 10).join(', ')}`, 400, { unknown: unknown.slice(0, 100) });
      agents = ids.map((id) => fleet.get(id)!);
    }
    agents = agents.filter((a) => a.revokedAt == null);
    if (agents.length === 0) throw new ApiError('bad_request', 'no agent matches the targets');
    if (agents.length > config.maxTargetsPerTask) {
      throw new ApiError('limit_exceeded', `${agents.length} targets; at most ${config.maxTargetsPerTask} per task (MUSTER_MAX_TARGETS_PER_TASK)`);
    }
    const now = Date.now();
    const task: Task = {
      // Random: a task is named by a short prefix of its id (`muster task 3f2a9c1e`, as git does with
      // commits), which a time-ordered id would share with every task made in the same minute.
      id: randomUUID(),
      name: input.name?.trim() || defaultTaskName(input.script),
      script: input.script,
      scriptSha256: createHash('sha256').update(input.script).digest('hex'),
      interpreter: input.interpreter,
      args: input.args,
      env: input.env,
      cwd: input.cwd,
      timeoutSec: input.timeoutSec,
      targets: input.targets,
      concurrency: input.concurrency ?? null,
      maxFailures: input.maxFailures ?? null,
      offline: input.offline,
      queueTtlSec: input.offline === 'queue' ? input.queueTtlSec : null,
      createdBy: actor.username,
      createdAt: now,
      status: 'running',
      total: agents.length,
      finishedAt: null,
      cancelledAt: null,
      cancelledBy: null,
      rerunOf,
      scriptId: input.scriptId ?? null,
      scriptVersion: input.scriptVersion ?? null,
      scheduleId: input.scheduleId ?? null,
      secretEnv: input.secretEnv ?? [],
      signature: input.signature ?? null,
      ownerNode: this.d.nodeId,
    };
    // Execution ids are time-ordered (db/ids.ts): a task's rows are written together at the end of
    // the table's primary key instead of on as many scattered pages.
    const executions: Execution[] = agents.map((a) => {
      // Refused up front when the host's reported policy forbids it (the agent would refuse it too).
      const denied = taskDenial(a.policy, task);
      if (denied) {
        return {
          id: uuidv7(),
          taskId: task.id,
          agentId: a.id,
          agentName: a.name,
          status: 'policy_denied',
          reason: denied,
          exitCode: null,
          signal: null,
          queuedUntil: null,
          dispatchedAt: null,
          startedAt: null,
          finishedAt: now,
          outputBytes: 0,
          nextSeq: 0,
          truncated: false,
          containment: null,
          reconciledAt: null,
        };
      }
      const online = fleet.isOnline(a.id);
      const queued = !online && input.offline === 'queue';
      return {
        id: uuidv7(),
        taskId: task.id,
        agentId: a.id,
        agentName: a.name,
        status: online || queued ? 'pending' : 'skipped',
        // In a cluster `online` is online on any node (its messages go through that node).
        reason: online || queued ? null : 'agent offline',
        exitCode: null,
        signal: null,
        queuedUntil: input.offline === 'queue' && (online || queued) ? now + input.queueTtlSec * 1000 : null,
        dispatchedAt: null,
        startedAt: null,
        finishedAt: online || queued ? null : now,
        outputBytes: 0,
        nextSeq: 0,
        truncated: false,
        containment: null,
        reconciledAt: null,
      };
    });
    await this.d.repo.createTask(task, executions);
    await this.d.audit.record({
      actor,
      action: rerunOf ? 'task.rerun' : 'task.create',
      targetType: 'task',
      targetId: task.id,
      details: {
        targets: input.targets,
        agents: agents.length,
        scriptSha256: task.scriptSha256,
        interpreter: task.interpreter,
        signed: task.signature != null,
        policyDenied: executions.filter((e) => e.status === 'policy_denied').length,
        ...(rerunOf ? { rerunOf, ...rerunDetails } : {}),
      },
    });
    const counts = this.d.scheduler.submit(task, executions);
    return { ...taskView(task, counts), executions: executions.map(executionView) };
  }

  async cancel(taskId: string, actor: Actor): Promise<ReturnType<typeof taskView>> {
    const done = await this.d.scheduler.cancel(taskId, actor.username);
    if (!done) {
      const t = await this.d.repo.getTask(taskId);
      if (!t) throw notFound('task');
      // Another node runs it: the cancel (and its audit) happen there.
      if (t.status === 'running' && this.d.ownedElsewhere(t.ownerNode)) {
        let r: RemoteCancelAnswer;
        try {
          r = (await this.d.cancelRemote(t.ownerNode!, taskId, actor)) as RemoteCancelAnswer;
        } catch (err) {
          // No answer: the owner died (no responders) or is stuck; a live node takes its tasks over.
          const wait = Math.max(1, this.d.takeoverPendingSec(t.ownerNode) ?? this.d.config.clusterLeaseTtlMs / 1000);
          throw new ApiError(
            'unavailable',
            `the server node running this task (${t.ownerNode}) did not answer (${(err as Error).message}); if it is gone another node takes the task over; retry in ${Math.ceil(wait)} s`,
            503,
            undefined,
            Math.ceil(wait),
          );
        }
        if ('error' in r) throw new ApiError(r.error.code, r.error.message, r.error.status, undefined, r.error.retryAfterSec);
        return r.task;
      }
      // Its owner node died and no live node has taken it over yet: neither lost nor a silent success.
      const wait = t.status === 'running' ? this.d.takeoverPendingSec(t.ownerNode) : null;
      if (wait != null) {
        throw new ApiError(
          'unavailable',
          `the server node running this task (${t.ownerNode}) is gone and another node has not taken the task over yet; retry in ${wait} s`,
          503,
          undefined,
          wait,
        );
      }
      // Running, owned here (or by nobody else alive), yet not in the scheduler: a takeover or a
      // restart is restoring it right now (claimed in the database, not loaded yet). Not finished.
      if (t.status === 'running') {
        throw new ApiError(
          'unavailable',
          'this task is being restored on this server node (taken over from a lost node, or after a restart); retry in 1 s',
          503,
          undefined,
          1,
        );
      }
      await this.d.audit.record({ actor, action: 'task.cancel', targetType: 'task', targetId: taskId, ok: false, details: { reason: 'already finished' } });
      throw new ApiError('conflict', `task is already ${t.status}`);
    }
    const { task, counts, signalled } = done;
    await this.d.audit.record({
      actor,
      action: 'task.cancel',
      targetType: 'task',
      targetId: taskId,
      details: { signalled, scriptSha256: task.scriptSha256, targets: task.targets },
    });
    return taskView(task, counts);
  }

  /**
   * Runs a task's script again on the agents that failed (or all, with `all`). `lost` executions
   * are those whose agent never said whether the script ran: re-running them may run it twice, so
   * a failed-only rerun that would include them needs `includeLost` (true or false) said explicitly.
   */
  async rerun(taskId: string, actor: Actor, opts: { all: boolean; includeLost?: boolean | undefined }): Promise<Awaited<ReturnType<ExecService['create']>>> {
    const task = this.d.scheduler.view(taskId)?.task ?? (await this.d.repo.getTask(taskId));
    if (!task) throw notFound('task');
    const execs = await this.executionsOf(taskId);
    let pick = opts.all ? execs : execs.filter((e) => FAILURE_STATES.includes(e.status));
    if (!opts.all) {
      const lost = pick.filter((e) => e.status === 'lost').length;
      if (lost > 0 && opts.includeLost === undefined) {
        throw new ApiError(
          'lost_unconfirmed',
          `${lost} execution(s) are lost: their agent never reported whether the script ran, ` +
            'so re-running them may run it twice. Send {"includeLost": true} to re-run them too, or {"includeLost": false} to re-run only the others',
          409,
          { lost },
        );
      }
      if (opts.includeLost === false) pick = pick.filter((e) => e.status !== 'lost');
    }
    const agentIds = pick.map((e) => e.agentId).filter((id) => this.d.fleet.get(id));
    if (agentIds.length === 0) throw new ApiError('conflict', opts.all ? 'no agents to rerun on' : 'no failed executions to rerun');
    return this.create(
      {
        name: task.name,
        script: task.script,
        interpreter: task.interpreter,
        args: task.args,
        env: task.env,
        cwd: task.cwd,
        timeoutSec: task.timeoutSec,
        targets: { agentIds },
        concurrency: task.concurrency,
        maxFailures: task.maxFailures,
        offline: task.offline,
        queueTtlSec: task.queueTtlSec ?? 3600,
        scriptId: task.scriptId,
        scriptVersion: task.scriptVersion,
        secretEnv: task.secretEnv,
        signature: task.signature,
      },
      actor,
      task.id,
      opts.all ? {} : { includeLost: opts.includeLost ?? false },
    );
  }

  async executionsOf(taskId: string): Promise<Execution[]> {
    const active = this.d.scheduler.view(taskId);
    if (active) return [...active.executions].sort((a, b) => a.agentName.localeCompare(b.agentName) || a.id.localeCompare(b.id));
    return this.d.repo.executionsOf(taskId);
  }

  async getTask(taskId: string) {
    const active = this.d.scheduler.view(taskId);
    if (active) return { ...taskView(active.task, active.counts), executions: (await this.executionsOf(taskId)).map(executionView) };
    const t = await this.d.repo.getTask(taskId);
    if (!t) throw notFound('task');
    const execs = await this.d.repo.executionsOf(taskId);
    const counts: Record<string, number> = {};
    for (const e of execs) counts[e.status] = (counts[e.status] ?? 0) + 1;
    return { ...taskView(t, counts), executions: execs.map(executionView) };
  }

  async listTasks(f: TaskFilter) {
    const { tasks, total } = await this.d.repo.listTasks(f);
    const stored = await this.d.repo.countsFor(tasks.filter((t) => !this.d.scheduler.isActive(t.id)).map((t) => t.id));
    const items = tasks.map((t) => {
      const active = this.d.scheduler.view(t.id);
      const { script: _s, ...rest } = active ? taskView(active.task, active.counts) : taskView(t, stored.get(t.id) ?? {});
      return { ...rest, scriptBytes: Buffer.byteLength(t.script), scriptPreview: scriptPreview(t.script) };
    });
    return { items, total };
  }

  /** Executions across tasks (an agent's history); live state for the ones still active. */
  async listExecutions(f: { agentId?: string; status?: string; limit: number; offset: number }) {
    const { items, total } = await this.d.repo.listExecutions(f);
    return {
      items: items.map(({ e, createdAt, scriptHead }) => ({
        ...executionView(this.d.scheduler.get(e.id) ?? e),
        createdAt: new Date(createdAt).toISOString(),
        script: scriptHead,
      })),
      total,
    };
  }

  /** Resolves once every output chunk received so far is stored (a seq-range read then sees it). */
  async outputStored(): Promise<void> {
    // During a database outage the wait has no end: say so at once (503) instead of hanging.
    if (!(await this.d.writer.drainUnlessDegraded())) throw new ApiError('database_unavailable', 'the database is unavailable; retry later');
  }

  async getExecution(id: string): Promise<Execution> {
    const e = this.d.scheduler.get(id) ?? (await this.d.repo.getExecution(id));
    if (!e) throw notFound('execution');
    return e;
  }

  /** A cancel sent by another node for a task this node runs. */
  async cancelForNode(taskId: string, actor: Actor): Promise<RemoteCancelAnswer> {
    try {
      return { task: await this.cancel(taskId, actor) };
    } catch (err) {
      if (err instanceof ApiError) return { error: { code: err.code, message: err.message, status: err.status, retryAfterSec: err.retryAfterSec } };
      throw err;
    }
  }

  /**
   * Cluster: the other node whose running task holds an execution no active task here holds
   * (null: none). This node then neither acks, cancels nor revives it: the owner settles it, or,
   * when the owner died, the node that takes the task over (it asks the agent to resend).
   */
  private async ownerElsewhere(executionId: string): Promise<string | null> {
    if (this.d.scheduler.get(executionId)) return null;
    const row = await this.d.repo.getExecution(executionId);
    if (!row) return null;
    const task = await this.d.repo.getTask(row.taskId);
    if (task == null || task.status !== 'running') return null;
    return this.d.ownedElsewhere(task.ownerNode) || this.d.takeoverPendingSec(task.ownerNode) != null ? task.ownerNode! : null;
  }

  /* ---------------- agent side ---------------- */

  /** Whether the server holds this execution in memory as one of this agent's, or relays it to its owner node (a reply owed). */
  holds(agentId: string, executionId: string): boolean {
    return this.d.scheduler.holds(agentId, executionId) || this.d.relays(executionId);
  }

  started(agentId: string, m: AgentMessage<'exec.started'>): void {
    this.d.scheduler.started(agentId, m);
  }

  output(agentId: string, executionId: string, stream: Stream, seq: number, data: Uint8Array): void {
    this.d.scheduler.output(agentId, executionId, stream, seq, data);
  }

  finished(agentId: string, m: AgentMessage<'exec.finished'>): void {
    // Not part of an active task: a `lost` execution of a completed task whose result came late
    // is taken after all; anything else is over (or never ours) and the agent may drop it.
    if (!this.d.scheduler.finished(agentId, m)) void this.lateFinished(agentId, m);
  }

  /**
   * exec.finished for an execution no active task holds. When it is this agent's and `lost`, its
   * task is reopened and the agent asked to resend (exec.resume): the output it still has, then
   * the result, which then takes the normal path. Otherwise it is acked once stored state is safe.
   */
  private async lateFinished(agentId: string, m: AgentMessage<'exec.finished'>): Promise<void> {
    const { executionId } = m;
    let e: Execution | undefined;
    try {
      const owner = await this.ownerElsewhere(executionId);
      if (owner != null) return this.d.forwardReport(owner, agentId, m);
      e = await this.revive(agentId, executionId);
    } catch (err) {
      // Not acked: the agent keeps the result and names it again in its next hello.
      this.d.log.error({ err, agentId, executionId }, 'could not look up a late execution result');
      return;
    }
    if (e?.status === 'lost') {
      this.d.scheduler.adopt(e);
      // Output sent while it was forgotten was dropped: have the agent resend it, then the result.
      if (m.outputSeq > e.nextSeq) {
        this.d.fleet.send(agentId, { type: 'exec.resume', executionId, fromSeq: e.nextSeq });
        return;
      }
    }
    // Active now (reopened here or by a concurrent report): the normal path; else acked.
    if (e) this.finished(agentId, m);
    else this.d.writer.afterFlush(() => void this.d.fleet.send(agentId, { type: 'exec.ack', executionId }), true);
  }

  /**
   * An agent reports an execution that no active task holds. If it is this agent's and `lost`,
   * its task is read back and reopened so the real result can replace `lost`; the execution
   * (still `lost`) is returned. Concurrent reports of one execution share one lookup.
   */
  private revive(agentId: string, executionId: string): Promise<Execution | undefined> {
    let p = this.reviving.get(executionId);
    if (!p) {
      p = this.doRevive(agentId, executionId).finally(() => this.reviving.delete(executionId));
      this.reviving.set(executionId, p);
    }
    return p;
  }

  private async doRevive(agentId: string, executionId: string): Promise<Execution | undefined> {
    const { scheduler, repo } = this.d;
    const active = (): Execution | undefined => {
      const e = scheduler.get(executionId);
      return e && scheduler.isActive(e.taskId) && e.agentId === agentId ? e : undefined;
    };
    const inMemory = scheduler.get(executionId);
    if (inMemory && scheduler.isActive(inMemory.taskId)) return active();
    const taskId = inMemory?.taskId ?? (await repo.getExecution(executionId))?.taskId;
    if (!taskId) return undefined;
    // A completion still being stored: let it land first, so the reopened task is not overwritten.
    await scheduler.settled(taskId);
    if (scheduler.isActive(taskId)) return active();
    const row = await repo.getExecution(executionId);
    if (!row || row.agentId !== agentId || row.status !== 'lost') return undefined;
    const [task, executions] = await Promise.all([repo.getTask(taskId), repo.executionsOf(taskId)]);
    if (!task) return undefined;
    // Another report (another agent of the same task) may have reopened it while we read.
    if (scheduler.isActive(taskId)) return active();
    this.d.log.info({ agentId, executionId, taskId }, 'a lost execution was reported by its agent; reopening its task to take the result');
    scheduler.reopen(task, executions);
    return active();
  }

  rejected(agentId: string, m: AgentMessage<'exec.rejected'>): void {
    this.d.scheduler.rejected(agentId, m);
  }

  /** hello: reconcile with what the agent reports; executions no active task holds are looked up. */
  connected(agentId: string, hello: Hello): void {
    for (const x of this.d.scheduler.agentReturned(agentId, hello)) void this.lateHello(agentId, x);
  }

  /** hello named an execution no active task holds: a late result of a `lost` one is taken, the rest is over. */
  private async lateHello(agentId: string, x: NamedExecution): Promise<void> {
    let e: Execution | undefined;
    try {
      // The owner reconciles it from this hello (ExecRelay broadcasts it).
      if ((await this.ownerElsewhere(x.executionId)) != null) return;
      e = await this.revive(agentId, x.executionId);
    } catch (err) {
      // Neither acked nor cancelled: the agent keeps it and names it again in its next hello.
      this.d.log.error({ err, agentId, executionId: x.executionId }, 'could not look up an execution named in hello');
      return;
    }
    if (!this.d.fleet.isOnline(agentId)) return;
    if (e?.status === 'lost') this.d.scheduler.takeBack(agentId, e, x.state);
    else if (!e || isFinal(e.status)) this.d.scheduler.dismiss(agentId, x);
    // Otherwise a concurrent report already took it back and asked for the rest.
  }

  disconnected(agentId: string): void {
    this.d.scheduler.agentLeft(agentId);
  }
}
