import { selectorLimits } from '../config/config.js';
import type { Capability, Core } from '../core.js';
import { dbFailure } from '../db/failures.js';
import type { AgentChannel } from '../fleet/fleet.js';
import { selectAgents } from '../fleet/routes.js';
import type { AgentBinaryHandlers } from '../ws/handlers.js';
import { ConsoleFanout } from './fanout.js';
import { ExecWriter } from './output-store.js';
import { ExecRepo } from './repository.js';
import { execRoutes } from './routes.js';
import { Scheduler } from './scheduler.js';
import { ExecService } from './service.js';

/**
 * Remote execution (issue 5): tasks, dispatch, output storage, reconciliation and live fan-out.
 * Composes repository → writer → scheduler → service, and wires them to sockets, routes and the bus.
 */
export function createExec(core: Core): Capability<'exec.started' | 'exec.finished' | 'exec.rejected', 'task.subscribe' | 'task.unsubscribe'> & {
  execOutput: AgentBinaryHandlers['execOutput'];
  /** Task creation and reads for other capabilities (script library, schedules). */
  service: ExecService;
} {
  const { config, fleet, bus } = core;
  const log = core.log.child({ component: 'exec' });
  const repo = new ExecRepo(core.db);
  // Agents whose sockets are paused because the database is behind on output (one socket each).
  const paused = new Map<string, AgentChannel>();
  const writer = new ExecWriter(repo, log, {
    dialect: core.dialect, intervalMs: config.outputFlushMs, batchBytes: config.outputBatchBytes,
    highWaterBytes: config.outputHighWaterBytes, maxFlushBytes: config.outputMaxFlushBytes,
    retryInitialMs: config.dbRetryInitialMs, retryMaxMs: config.dbRetryMaxMs,
    onPressure: (on) => {
      // Told once per episode (an outage is one), never per agent or per chunk.
      if (on) {
        log.info({ queuedBytes: writer.queuedBytes() }, 'output backpressure on: agents sending output are paused until the database catches up');
        return;
      }
      log.info({ pausedAgents: paused.size, queuedBytes: writer.queuedBytes() }, 'output backpressure off');
      for (const [agentId, ch] of paused) {
        ch.resume?.();
        // Its heartbeats were not read while paused: that silence is ours, not the agent's.
        fleet.touch(agentId, ch.linkId);
      }
      paused.clear();
    },
  });
  const reconcileTimeoutMs = config.reconcileTimeoutSec * 1000;
  const scheduler = new Scheduler({ repo, writer, fleet, bus, log, metrics: core.metrics, maxExecutionsPerAgent: config.maxExecutionsPerAgent, reconcileTimeoutMs });
  const fanout = new ConsoleFanout(config.execConsoleBufferBytes);
  core.metrics.sources.tasksRunning = () => scheduler.tasks.size;
  const svc = new ExecService({
    config, repo, writer, scheduler, fanout, fleet, audit: core.audit, log, metrics: core.metrics, select: (s) => selectAgents(fleet, s, undefined, selectorLimits(config)),
  });
  let sweepTimer: NodeJS.Timeout | undefined;
  const unsubs: Array<() => void> = [];

  // Connect hooks run once the welcome is written: reconcile (resume, dispatch) at once.
  fleet.onConnect((agentId, hello) => svc.connected(agentId, hello));
  fleet.onDisconnect((agentId) => svc.disconnected(agentId));

  return {
    agentHandlers: {
      'exec.started': (ctx, m) => svc.started(ctx.agentId, m),
      'exec.finished': (ctx, m) => svc.finished(ctx.agentId, m),
      'exec.rejected': (ctx, m) => svc.rejected(ctx.agentId, m),
    },
    consoleHandlers: {
      'task.subscribe': async (ch, m) => {
        // Subscribe before reading the snapshot: an update that lands while the read runs is
        // delivered rather than lost (the snapshot sent after it is at least as new).
        fanout.subscribe(ch, m.taskId, m.output);
        try {
          const t = await svc.getTask(m.taskId);
          const { executions: _e, ...task } = t;
          ch.send({ type: 'task.updated', task });
        } catch (err) {
          fanout.unsubscribe(ch, m.taskId);
          // The database away is not a missing task: say which, so the console retries.
          const failure = dbFailure(err);
          if (failure) ch.send({ type: 'error', code: failure === 'no_space' ? 'insufficient_storage' : 'database_unavailable', message: 'the database is unavailable; retry later', ref: m.taskId });
          else ch.send({ type: 'error', code: 'not_found', message: 'task not found', ref: m.taskId });
        }
      },
      'task.unsubscribe': (ch, m) => fanout.unsubscribe(ch, m.taskId),
    },
    execOutput: (ctx, executionId, stream, seq, data) => {
      fleet.touch(ctx.agentId, ctx.channel.linkId);
      svc.output(ctx.agentId, executionId, stream, seq, data);
      // Database behind: stop reading this agent's socket; TCP then pauses the agent, which pauses its child.
      if (writer.pressured && paused.get(ctx.agentId) !== ctx.channel) {
        paused.set(ctx.agentId, ctx.channel);
        ctx.channel.pause?.();
      }
    },
    service: svc,
    routes: execRoutes(svc, repo),
    async start() {
      const { tasks, executions } = await repo.loadActive();
      const byTask = new Map<string, typeof executions>();
      for (const e of executions) {
        const list = byTask.get(e.taskId) ?? [];
        list.push(e);
        byTask.set(e.taskId, list);
      }
      const now = Date.now();
      for (const t of tasks) {
        const execs = byTask.get(t.id) ?? [];
        for (const e of execs) {
          if (e.status === 'pending') scheduler.loadedPending.add(e.id);
          if (e.status !== 'dispatched' && e.status !== 'running') continue;
          // The row and the output chunks are written in separate batches, so after a crash either
          // may be ahead: the stored chunks are the truth (the agent resends from there).
          const stored = await repo.storedOutput(e.id);
          e.nextSeq = stored.nextSeq;
          e.outputBytes = stored.bytes;
          // Wait up to reconcileTimeoutSec for the agent's hello, then `lost`.
          scheduler.goneSince.set(e.agentId, now);
        }
        scheduler.add(t, execs);
      }
      if (tasks.length) log.info({ tasks: tasks.length, executions: executions.length }, 'resumed active tasks');
      for (const at of scheduler.tasks.values()) {
        // No agent is online yet: this registers each pending execution as waiting for its agent,
        // so the agent's return (wake) dispatches it. Without it a queued execution loaded here
        // would stay pending until its queue TTL.
        scheduler.pump(at);
        scheduler.maybeComplete(at);
      }
      unsubs.push(bus.subscribe('execution.updated', (p) => fanout.execution(p.execution.taskId, p.execution)));
      sweepTimer = setInterval(() => scheduler.sweep(), Math.min(1000, Math.max(100, reconcileTimeoutMs / 4)));
      sweepTimer.unref();
    },
    async stop() {
      clearInterval(sweepTimer);
      for (const u of unsubs) u();
      scheduler.stop();
      await writer.stop();
    },
  };
}

