import { selectorLimits } from '../config/config.js';
import type { Capability, Core } from '../core.js';
import { dbFailure } from '../db/failures.js';
import { selectAgents } from '../fleet/routes.js';
import type { AgentBinaryHandlers } from '../ws/handlers.js';
import { ConsoleFanout } from './fanout.js';
import { ExecWriteBatcher } from './write-batcher.js';
import { ReadGate } from './read-gate.js';
import { ExecRepo } from './repo.js';
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
  const repo = new ExecRepo(core.db, core.dialect);
  const gate = new ReadGate(fleet, log);
  const writer: ExecWriteBatcher = new ExecWriteBatcher(repo, log, {
    intervalMs: config.outputFlushMs,
    batchBytes: config.outputBatchBytes,
    highWaterBytes: config.outputHighWaterBytes,
    maxFlushBytes: config.outputMaxFlushBytes,
    retryInitialMs: config.dbRetryInitialMs,
    retryMaxMs: config.dbRetryMaxMs,
    onPressure: (on) => gate.pressure(on, writer.queuedBytes()),
  });
  const reconcileTimeoutMs = config.reconcileTimeoutSec * 1000;
  const fanout = new ConsoleFanout(config.execConsoleBufferBytes);
  const scheduler = new Scheduler({
    repo,
    writer,
    fleet,
    bus,
    live: fanout,
    log,
    metrics: core.metrics,
    maxExecutionsPerAgent: config.maxExecutionsPerAgent,
    reconcileTimeoutMs,
    maxOutputBytes: config.maxOutputBytes,
  });
  core.metrics.sources.tasksRunning = () => scheduler.size;
  const svc = new ExecService({
    config,
    repo,
    writer,
    scheduler,
    fleet,
    audit: core.audit,
    log,
    select: (s) => selectAgents(fleet, s, undefined, selectorLimits(config)),
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
          if (failure)
            ch.send({
              type: 'error',
              code: failure === 'no_space' ? 'insufficient_storage' : 'database_unavailable',
              message: 'the database is unavailable; retry later',
              ref: m.taskId,
            });
          else ch.send({ type: 'error', code: 'not_found', message: 'task not found', ref: m.taskId });
        }
      },
      'task.unsubscribe': (ch, m) => fanout.unsubscribe(ch, m.taskId),
    },
    execOutput: (ctx, executionId, stream, seq, data) => {
      fleet.touch(ctx.agentId, ctx.channel.linkId);
      svc.output(ctx.agentId, executionId, stream, seq, data);
      // Database behind: stop reading this agent's socket (see ReadGate).
      gate.admit(ctx.agentId, ctx.channel);
    },
    service: svc,
    routes: execRoutes(svc, repo),
    async start() {
      const restored = await scheduler.restore();
      if (restored.tasks) log.info(restored, 'resumed active tasks');
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
