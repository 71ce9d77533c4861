import { createHash, randomUUID } from 'node:crypto';
import { defaultTaskName, rejectCodeOf, RejectCode, type AgentMessage, type Hello, type Stream } from '../../protocol/index.js';
import type { Actor, AuditLog } from '../auth/audit.js';
import type { Config } from '../config/config.js';
import type { AgentRecord } from '../fleet/repo.js';
import type { Fleet } from '../fleet/fleet.js';
import { ApiError, notFound } from '../http/errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ConsoleFanout } from './fanout.js';
import { executionView, FAILURE_STATES, isFinal, taskView, type Execution, type Task, type TaskSpec } from './model.js';
import type { ExecWriter } from './output-store.js';
import { taskDenial } from './policy.js';
import type { ExecRepo, TaskFilter } from './repository.js';
import type { Scheduler } from './scheduler.js';

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
  config: Config; repo: ExecRepo; writer: ExecWriter; scheduler: Scheduler; fanout: ConsoleFanout;
  fleet: Fleet; audit: AuditLog; log: Logger; metrics: Metrics;
  /** Resolves a selector over the in-memory fleet (throws ApiError 400 on a syntax error). */
  select(selector: string): AgentRecord[];
}

/**
 * Remote execution use cases: create/cancel/rerun tasks, read them back, and the agent side of
 * the protocol (started, output, finished, rejected, reconciliation at hello).
 */
/** Why output is missing when it is: an execution that lost output says so (`truncated` + reason). */
const TRUNCATED_GAP = 'output truncated: part of it was lost while the agent and the server were apart';
const TRUNCATED_BY_AGENT = 'output truncated: the agent\'s output buffer filled while the server was unreachable';

/** The first lines of a script for list views (the whole script only in GET /api/tasks/:id). */
function scriptPreview(script: string): string {
  const lines = script.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#!'));
  const head = lines.slice(0, 3).join('\n');
  return head.length > 300 ? `${head.slice(0, 299)}…` : head;
}

export class ExecService {
  /** Lookups of executions reported late, by id (a hello and an exec.finished may race). */
  private readonly reviving = new Map<string, Promise<Execution | undefined>>();

  constructor(private readonly d: ServiceDeps) {}

  /* ---------------- REST use cases ---------------- */

  async create(input: CreateTaskInput, actor: Actor, rerunOf: string | null = null, rerunDetails: Record<string, unknown> = {}): Promise<ReturnType<typeof taskView> & { executions: unknown[] }> {
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
      id: randomUUID(), name: input.name?.trim() || defaultTaskName(input.script), script: input.script, scriptSha256: createHash('sha256').update(input.script).digest('hex'),
      interpreter: input.interpreter, args: input.args, env: input.env, cwd: input.cwd, timeoutSec: input.timeoutSec,
      targets: input.targets, concurrency: input.concurrency ?? null, maxFailures: input.maxFailures ?? null, offline: input.offline,
      queueTtlSec: input.offline === 'queue' ? input.queueTtlSec : null, createdBy: actor.username, createdAt: now, status: 'running',
      total: agents.length, finishedAt: null, cancelledAt: null, cancelledBy: null, rerunOf,
      scriptId: input.scriptId ?? null, scriptVersion: input.scriptVersion ?? null, scheduleId: input.scheduleId ?? null, secretEnv: input.secretEnv ?? [],
      signature: input.signature ?? null,
    };
    const executions: Execution[] = agents.map((a) => {
      // Refused up front when the host's reported policy forbids it (the agent would refuse it too).
      const denied = taskDenial(a.policy, task);
      if (denied) {
        return {
          id: randomUUID(), taskId: task.id, agentId: a.id, agentName: a.name, status: 'policy_denied', reason: denied,
          exitCode: null, signal: null, queuedUntil: null, dispatchedAt: null, startedAt: null, finishedAt: now, outputBytes: 0,
          nextSeq: 0, truncated: false, containment: null, reconciledAt: null,
        };
      }
      const online = fleet.isOnline(a.id);
      const queued = !online && input.offline === 'queue';
      return {
        id: randomUUID(), taskId: task.id, agentId: a.id, agentName: a.name,
        status: online || queued ? 'pending' : 'skipped',
        // In a cluster an agent online on another node is not reachable from here yet (issue 12).
        reason: online || queued ? null : a.status === 'online' ? 'agent connected to another server node (cross-node execution is not implemented yet)' : 'agent offline',
        exitCode: null, signal: null, queuedUntil: input.offline === 'queue' && (online || queued) ? now + input.queueTtlSec * 1000 : null, dispatchedAt: null, startedAt: null,
        finishedAt: online || queued ? null : now, outputBytes: 0, nextSeq: 0, truncated: false, containment: null, reconciledAt: null,
      };
    });
    await this.d.repo.createTask(task, executions);
    await this.d.audit.record({
      actor, action: rerunOf ? 'task.rerun' : 'task.create', targetType: 'task', targetId: task.id,
      details: {
        targets: input.targets, agents: agents.length, scriptSha256: task.scriptSha256, interpreter: task.interpreter,
        signed: task.signature != null, policyDenied: executions.filter((e) => e.status === 'policy_denied').length,
        ...(rerunOf ? { rerunOf, ...rerunDetails } : {}),
      },
    });
    const at = this.d.scheduler.add(task, executions);
    this.d.scheduler.pump(at);
    this.d.scheduler.maybeComplete(at);
    this.d.scheduler.markDirty(task.id);
    return { ...taskView(task, this.d.scheduler.counts(at)), executions: executions.map(executionView) };
  }

  async cancel(taskId: string, actor: Actor): Promise<ReturnType<typeof taskView>> {
    const { scheduler, fleet } = this.d;
    const at = scheduler.tasks.get(taskId);
    if (!at) {
      const t = await this.d.repo.getTask(taskId);
      if (!t) throw notFound('task');
      await this.d.audit.record({ actor, action: 'task.cancel', targetType: 'task', targetId: taskId, ok: false, details: { reason: 'already finished' } });
      throw new ApiError('conflict', `task is already ${t.status}`);
    }
    const now = Date.now();
    at.task.cancelledAt = now;
    at.task.cancelledBy = actor.username;
    at.stopped = true;
    await this.d.repo.updateTask(taskId, { cancelledAt: now, cancelledBy: actor.username });
    const reason = `cancelled by ${actor.username}`;
    let signalled = 0;
    for (const e of at.executions) {
      if (e.status === 'pending') scheduler.finish(e, 'cancelled', { reason, finishedAt: now });
      else if (e.status === 'dispatched' || e.status === 'running') {
        // The agent confirms with exec.finished(cancelled); an agent that is away is told when it returns.
        if (fleet.send(e.agentId, { type: 'exec.cancel', executionId: e.id, reason })) {
          e.reason = reason;
          at.cancelling.add(e.id);
          signalled++;
        } else scheduler.finish(e, 'cancelled', { reason: `${reason} (agent offline)`, finishedAt: now });
      }
    }
    await this.d.audit.record({ actor, action: 'task.cancel', targetType: 'task', targetId: taskId, details: { signalled, scriptSha256: at.task.scriptSha256, targets: at.task.targets } });
    return taskView(at.task, scheduler.counts(at));
  }

  /**
   * Runs a task's script again on the agents that failed (or all, with `all`). `lost` executions
   * are those whose agent never said whether the script ran: re-running them may run it twice, so
   * a failed-only rerun that would include them needs `includeLost` (true or false) said explicitly.
   */
  async rerun(taskId: string, actor: Actor, opts: { all: boolean; includeLost?: boolean | undefined }): Promise<Awaited<ReturnType<ExecService['create']>>> {
    const task = this.d.scheduler.tasks.get(taskId)?.task ?? (await this.d.repo.getTask(taskId));
    if (!task) throw notFound('task');
    const execs = await this.executionsOf(taskId);
    let pick = opts.all ? execs : execs.filter((e) => FAILURE_STATES.includes(e.status));
    if (!opts.all) {
      const lost = pick.filter((e) => e.status === 'lost').length;
      if (lost > 0 && opts.includeLost === undefined) {
        throw new ApiError('lost_unconfirmed', `${lost} execution(s) are lost: their agent never reported whether the script ran, `
          + 'so re-running them may run it twice. Send {"includeLost": true} to re-run them too, or {"includeLost": false} to re-run only the others', 409, { lost });
      }
      if (opts.includeLost === false) pick = pick.filter((e) => e.status !== 'lost');
    }
    const agentIds = pick.map((e) => e.agentId).filter((id) => this.d.fleet.get(id));
    if (agentIds.length === 0) throw new ApiError('conflict', opts.all ? 'no agents to rerun on' : 'no failed executions to rerun');
    return this.create({
      name: task.name, script: task.script, interpreter: task.interpreter, args: task.args, env: task.env, cwd: task.cwd, timeoutSec: task.timeoutSec,
      targets: { agentIds }, concurrency: task.concurrency, maxFailures: task.maxFailures, offline: task.offline,
      queueTtlSec: task.queueTtlSec ?? 3600, scriptId: task.scriptId, scriptVersion: task.scriptVersion, secretEnv: task.secretEnv, signature: task.signature,
    }, actor, task.id, opts.all ? {} : { includeLost: opts.includeLost ?? false });
  }

  async executionsOf(taskId: string): Promise<Execution[]> {
    const at = this.d.scheduler.tasks.get(taskId);
    if (at) return [...at.executions].sort((a, b) => a.agentName.localeCompare(b.agentName) || a.id.localeCompare(b.id));
    return this.d.repo.executionsOf(taskId);
  }

  async getTask(taskId: string) {
    const at = this.d.scheduler.tasks.get(taskId);
    if (at) return { ...taskView(at.task, this.d.scheduler.counts(at)), executions: (await this.executionsOf(taskId)).map(executionView) };
    const t = await this.d.repo.getTask(taskId);
    if (!t) throw notFound('task');
    const execs = await this.d.repo.executionsOf(taskId);
    const counts: Record<string, number> = {};
    for (const e of execs) counts[e.status] = (counts[e.status] ?? 0) + 1;
    return { ...taskView(t, counts), executions: execs.map(executionView) };
  }

  async listTasks(f: TaskFilter) {
    const { tasks, total } = await this.d.repo.listTasks(f);
    const stored = await this.d.repo.countsFor(tasks.filter((t) => !this.d.scheduler.tasks.has(t.id)).map((t) => t.id));
    const items = tasks.map((t) => {
      const at = this.d.scheduler.tasks.get(t.id);
      const { script: _s, ...rest } = at ? taskView(at.task, this.d.scheduler.counts(at)) : taskView(t, stored.get(t.id) ?? {});
      return { ...rest, scriptBytes: Buffer.byteLength(t.script), scriptPreview: scriptPreview(t.script) };
    });
    return { items, total };
  }

  /** Executions across tasks (an agent's history); live state for the ones still active. */
  async listExecutions(f: { agentId?: string; status?: string; limit: number; offset: number }) {
    const { items, total } = await this.d.repo.listExecutions(f);
    return {
      items: items.map(({ e, createdAt, scriptHead }) => ({
        ...executionView(this.d.scheduler.executions.get(e.id) ?? e), createdAt: new Date(createdAt).toISOString(), script: scriptHead,
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
    const e = this.d.scheduler.executions.get(id) ?? (await this.d.repo.getExecution(id));
    if (!e) throw notFound('execution');
    return e;
  }

  /* ---------------- agent side ---------------- */

  private own(agentId: string, executionId: string): Execution | undefined {
    const e = this.d.scheduler.executions.get(executionId);
    return e && e.agentId === agentId ? e : undefined;
  }

  /** Whether the server holds this execution in memory as one of this agent's (a reply it is owed). */
  holds(agentId: string, executionId: string): boolean {
    return this.d.scheduler.executions.get(executionId)?.agentId === agentId;
  }

  started(agentId: string, m: AgentMessage<'exec.started'>): void {
    const e = this.own(agentId, m.executionId);
    if (!e) return;
    if (isFinal(e.status)) return;
    if (e.status === 'running' && e.startedAt != null) return;
    this.d.scheduler.change(e, { status: 'running', startedAt: m.startedAt, containment: m.containment ?? null });
  }

  output(agentId: string, executionId: string, stream: Stream, seq: number, data: Uint8Array): void {
    const e = this.own(agentId, executionId);
    if (!e) return;
    if (seq < e.nextSeq) return; // a resend of something already stored
    const patch: { nextSeq: number; outputBytes?: number; truncated?: boolean; reason?: string } = { nextSeq: seq + 1 };
    if (seq > e.nextSeq && !e.truncated) {
      patch.truncated = true; // the agent could not keep [nextSeq, seq)
      patch.reason = e.reason ?? TRUNCATED_GAP;
    }
    const room = this.d.config.maxOutputBytes - e.outputBytes;
    let chunk = data;
    if (chunk.length > room) {
      chunk = chunk.subarray(0, Math.max(0, room));
      patch.truncated = true;
      if (!e.truncated) patch.reason = e.reason ?? `output truncated at ${this.d.config.maxOutputBytes} bytes (MUSTER_MAX_OUTPUT_BYTES)`;
    }
    if (chunk.length > 0) {
      this.d.writer.output(e.id, seq, stream, chunk);
      this.d.metrics.outputBytes.inc({ stream }, chunk.length);
      patch.outputBytes = e.outputBytes + chunk.length;
      this.d.fanout.output(e.taskId, e.id, stream, seq, chunk);
    }
    const becameTruncated = patch.truncated && !e.truncated;
    // The byte count first: the `running` update below then counts this chunk, which consoles
    // received just before it (they show a live count from the last update plus the chunks since).
    Object.assign(e, patch);
    this.d.writer.update(e.id, patch);
    if (e.status === 'dispatched') {
      this.d.scheduler.change(e, { status: 'running', startedAt: e.startedAt ?? Date.now() });
    }
    if (becameTruncated) this.d.scheduler.change(e, { truncated: true });
  }

  finished(agentId: string, m: AgentMessage<'exec.finished'>): void {
    const e = this.own(agentId, m.executionId);
    const ack = () => void this.d.fleet.send(agentId, { type: 'exec.ack', executionId: m.executionId });
    if (!e || !this.d.scheduler.tasks.has(e.taskId)) {
      // Not part of an active task: a `lost` execution of a completed task whose result came late
      // is taken after all; anything else is over (or never ours) and the agent may drop it.
      void this.lateFinished(agentId, m);
      return;
    }
    if (isFinal(e.status) && e.status !== 'lost') {
      this.d.writer.afterFlush(ack);
      return;
    }
    const truncated = e.truncated || m.truncated || m.outputSeq > e.nextSeq;
    this.d.scheduler.finish(e, m.status, {
      exitCode: m.exitCode, signal: m.signal, startedAt: e.startedAt ?? m.startedAt, finishedAt: m.finishedAt, truncated,
      reason: m.error ?? m.reason ?? (m.status === 'cancelled' ? e.reason ?? 'cancelled' : m.status === 'timeout' ? 'timed out'
        : truncated ? e.reason ?? (m.truncated ? TRUNCATED_BY_AGENT : TRUNCATED_GAP) : null),
    });
    this.d.fanout.ended(e.taskId, e.id, e.nextSeq);
    this.d.writer.afterFlush(ack);
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
    else this.d.writer.afterFlush(() => void this.d.fleet.send(agentId, { type: 'exec.ack', executionId }));
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
      const e = scheduler.executions.get(executionId);
      return e && scheduler.tasks.has(e.taskId) && e.agentId === agentId ? e : undefined;
    };
    const inMemory = scheduler.executions.get(executionId);
    if (inMemory && scheduler.tasks.has(inMemory.taskId)) return active();
    const taskId = inMemory?.taskId ?? (await repo.getExecution(executionId))?.taskId;
    if (!taskId) return undefined;
    // A completion still being stored: let it land first, so the reopened task is not overwritten.
    await scheduler.settled(taskId);
    if (scheduler.tasks.has(taskId)) return active();
    const row = await repo.getExecution(executionId);
    if (!row || row.agentId !== agentId || row.status !== 'lost') return undefined;
    const [task, executions] = await Promise.all([repo.getTask(taskId), repo.executionsOf(taskId)]);
    if (!task) return undefined;
    // Another report (another agent of the same task) may have reopened it while we read.
    if (scheduler.tasks.has(taskId)) return active();
    this.d.log.info({ agentId, executionId, taskId }, 'a lost execution was reported by its agent; reopening its task to take the result');
    scheduler.reopen(task, executions);
    return active();
  }

  rejected(agentId: string, m: AgentMessage<'exec.rejected'>): void {
    const e = this.own(agentId, m.executionId);
    if (!e || isFinal(e.status)) return;
    const at = this.d.scheduler.tasks.get(e.taskId);
    if (at?.cancelling.has(e.id)) return this.d.scheduler.finish(e, 'cancelled', { reason: `cancelled (${m.reason})` });
    const code = rejectCodeOf(m);
    if (code === RejectCode.policyDenied) return this.d.scheduler.finish(e, 'policy_denied', { reason: `refused by the host: ${m.reason}` });
    // A duplicate means the agent saw this id before (and lost it): the run's outcome is unknown.
    const unknown = code === RejectCode.duplicate || code === RejectCode.unknownExecution;
    this.d.scheduler.finish(e, unknown ? 'lost' : 'failed', { reason: `agent rejected it: ${m.reason}` });
  }

  /** hello: reconcile what the server thinks runs on this agent with what the agent reports. */
  connected(agentId: string, hello: Hello): void {
    const { scheduler, fleet } = this.d;
    scheduler.goneSince.delete(agentId);
    const named = new Map(hello.executions.map((x) => [x.executionId, x]));
    for (const e of scheduler.busyOf(agentId)) {
      const x = named.get(e.id);
      named.delete(e.id);
      if (!x) {
        // Never confirmed (no exec.started): its exec.run may have died with the old link. Send it
        // again; the agent's journal refuses it if it did arrive, which then makes it `lost`.
        if (e.status === 'dispatched' && scheduler.redispatch(e)) continue;
        scheduler.finish(e, 'lost', { reason: 'the agent did not report this execution when it reconnected (the agent restarted)' });
        continue;
      }
      const at = scheduler.tasks.get(e.taskId);
      if (at?.cancelling.has(e.id) || at?.task.cancelledAt != null) {
        fleet.send(agentId, { type: 'exec.cancel', executionId: e.id, reason: e.reason ?? 'cancelled' });
      }
      fleet.send(agentId, { type: 'exec.resume', executionId: e.id, fromSeq: e.nextSeq });
    }
    // Executions the agent has but the server considers over (or no longer holds): take the real
    // result of a `lost` one, stop or forget the rest.
    for (const x of named.values()) {
      const e = scheduler.executions.get(x.executionId);
      if (e && e.agentId === agentId && scheduler.tasks.has(e.taskId) && (e.status === 'lost' || e.status === 'pending')) {
        // Declared lost while the agent was away, or its dispatch was not yet stored when the
        // server stopped: the agent has it, so take the real result.
        this.takeBack(agentId, e, x.state);
        continue;
      }
      if (e && scheduler.tasks.has(e.taskId)) {
        this.over(agentId, x);
        continue;
      }
      void this.lateHello(agentId, x);
    }
    scheduler.wake(agentId);
  }

  /** Adopts an execution the agent still has (running, or finished and unacked) and asks for the rest of it. */
  private takeBack(agentId: string, e: Execution, state: 'running' | 'finished'): void {
    const { scheduler, fleet } = this.d;
    scheduler.adopt(e);
    const at = scheduler.tasks.get(e.taskId);
    if (state === 'running' && at?.task.cancelledAt != null) {
      // Its task was cancelled while it was lost: the cancel applies now.
      at.cancelling.add(e.id);
      e.reason = `cancelled by ${at.task.cancelledBy ?? 'an operator'}`;
      fleet.send(agentId, { type: 'exec.cancel', executionId: e.id, reason: e.reason });
    }
    fleet.send(agentId, { type: 'exec.resume', executionId: e.id, fromSeq: e.nextSeq });
  }

  /** The server is done with an execution the agent still reports: stop it, or let the agent forget it. */
  private over(agentId: string, x: Hello['executions'][number]): void {
    if (x.state === 'running') this.d.fleet.send(agentId, { type: 'exec.cancel', executionId: x.executionId, reason: 'the execution is over on the server' });
    else this.d.fleet.send(agentId, { type: 'exec.ack', executionId: x.executionId });
  }

  /** hello named an execution no active task holds: a late result of a `lost` one is taken, the rest is over. */
  private async lateHello(agentId: string, x: Hello['executions'][number]): Promise<void> {
    let e: Execution | undefined;
    try {
      e = await this.revive(agentId, x.executionId);
    } catch (err) {
      // Neither acked nor cancelled: the agent keeps it and names it again in its next hello.
      this.d.log.error({ err, agentId, executionId: x.executionId }, 'could not look up an execution named in hello');
      return;
    }
    if (!this.d.fleet.isOnline(agentId)) return;
    if (e?.status === 'lost') this.takeBack(agentId, e, x.state);
    else if (!e || isFinal(e.status)) this.over(agentId, x);
    // Otherwise a concurrent report already took it back and asked for the rest.
  }

  disconnected(agentId: string): void {
    if (this.d.scheduler.busyOf(agentId).length) this.d.scheduler.goneSince.set(agentId, Date.now());
  }
}
