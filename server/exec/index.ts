import { selectorLimits } from '../config/config.js';
import type { Capability, Core } from '../core.js';
import { dbFailure } from '../db/failures.js';
import { selectAgents } from '../fleet/routes.js';
import type { AgentBinaryHandlers } from '../ws/handlers.js';
import { ConsoleFanout } from './fanout.js';
import { ExecWriteBatcher } from './write-batcher.js';
import { ReadGate } from './read-gate.js';
import { NOTIFIED_EXECUTION_STATES, type Execution } from './model.js';
import { ExecRelay } from './relay.js';
import { ExecRepo } from './repo.js';
import { storeWorkerScript, ThreadedStore } from './store-thread.js';
import { execRoutes } from './routes.js';
import { Scheduler } from './scheduler.js';
import { Takeover } from './takeover.js';
import { ExecService } from './service.js';

/**
 * Remote execution (issue 5): tasks, dispatch, output storage, reconciliation and live fan-out.
 * Composes repository → writer → scheduler → service, and wires them to sockets, routes and the bus.
 */
export function createExec(core: Core): Capability<'exec.started' | 'exec.finished' | 'exec.rejected', 'task.subscribe' | 'task.unsubscribe'> & {
  execOutput: AgentBinaryHandlers['execOutput'];
  /**
   * Another capability follows executions that end in NOTIFIED_EXECUTION_STATES while `wanted()`
   * says so (notifications: while a rule names `execution.failed`); their `execution.updated` is
   * then published even when no console watches the task.
   */
  followFailures(wanted: () => boolean): void;
  /** Task creation and reads for other capabilities (script library, schedules). */
  service: ExecService;
} {
  const { config, fleet, bus } = core;
  const log = core.log.child({ component: 'exec' });
  // Cluster: task and execution row writes are fenced to the tasks this node owns (takeover).
  const fenceNode = core.nodes.enabled ? config.nodeId : undefined;
  const repo = new ExecRepo(core.db, core.dialect, fenceNode);
  // MySQL/MariaDB: the writer's transactions run on a thread of their own (store-thread.ts), but
  // bulk output on this one; the built worker script is absent only when run from the sources.
  const script = core.dialect === 'mysql' && config.execWriterThread && config.dbUrl ? storeWorkerScript() : null;
  const threaded = script
    ? new ThreadedStore(
        script,
        {
          dbUrl: config.dbUrl!,
          dataDir: config.dataDir,
          timeouts: { connectTimeoutMs: config.dbConnectTimeoutMs, acquireTimeoutMs: config.dbAcquireTimeoutMs },
          queryTimeoutMs: config.dbQueryTimeoutMs,
          fenceNode,
        },
        repo,
        log,
      )
    : null;
  // The gate releases held sockets as the writer has room (the writer is made next; the gate asks it later).
  const gate = new ReadGate(fleet, log, () => config.outputHighWaterBytes - writer.queuedBytes());
  const writer: ExecWriteBatcher = new ExecWriteBatcher(threaded ?? repo, log, {
    intervalMs: config.outputFlushMs,
    // Cluster: other nodes read a running task's executions from its rows (GET /api/tasks/:id).
    deferMs: core.nodes.enabled ? 0 : config.execProgressWriteMs,
    batchBytes: config.outputBatchBytes,
    batchUpdates: config.outputBatchUpdates,
    highWaterBytes: config.outputHighWaterBytes,
    maxFlushBytes: config.outputMaxFlushBytes,
    retryInitialMs: config.dbRetryInitialMs,
    retryMaxMs: config.dbRetryMaxMs,
    onPressure: (on) => {
      gate.pressure(on, writer.queuedBytes());
      relay.pressure(on);
    },
  });
  const reconcileTimeoutMs = config.reconcileTimeoutSec * 1000;
  const fanout = new ConsoleFanout(config.execConsoleBufferBytes);
  // Cluster (issue 12): agents on other nodes are reached through the relay (server/exec/relay.ts).
  const cluster = core.nodes;
  const failureFollowers: Array<() => boolean> = [];
  /**
   * Whether an execution's change is published (`execution.updated`): building and sending the view
   * for every change of a 10,000-host batch nobody looks at was a large share of its CPU (issue 17).
   * In a cluster every change is published: consoles on other nodes read them from the bus.
   */
  const watched = (e: Execution): boolean =>
    cluster.enabled || fanout.subscribers(e.taskId) > 0 || (NOTIFIED_EXECUTION_STATES.includes(e.status) && failureFollowers.some((wanted) => wanted()));
  // eslint-disable-next-line prefer-const -- the relay needs the scheduler, which needs the relay's port
  let relay: ExecRelay;
  const scheduler = new Scheduler({
    repo,
    writer,
    fleet: {
      isOnline: (id) => relay.port.isOnline(id),
      send: (id, msg, json) => relay.port.send(id, msg, json),
      get: (id) => fleet.get(id),
    },
    bus,
    live: {
      output: (taskId, executionId, stream, seq, data) => {
        fanout.output(taskId, executionId, stream, seq, data);
        relay.liveOutput(taskId, executionId, stream, seq, data);
      },
      ended: (taskId, executionId, nextSeq) => {
        fanout.ended(taskId, executionId, nextSeq);
        relay.liveEnded(taskId, executionId, nextSeq);
      },
    },
    watched,
    log,
    metrics: core.metrics,
    maxExecutionsPerAgent: config.maxExecutionsPerAgent,
    reconcileTimeoutMs,
    maxOutputBytes: config.maxOutputBytes,
    ...(cluster.enabled ? { ownerNode: config.nodeId } : {}),
  });
  relay = new ExecRelay({
    enabled: cluster.enabled,
    link: cluster.link,
    fleet,
    agentNode: (id) => cluster.agentNode(id),
    scheduler,
    fanout,
    bus,
    log,
    bounds: {
      maxRelayedExecutions: config.clusterMaxRelayedExecutions,
      maxAgentRoutes: config.clusterMaxAgentRoutes,
      maxWatchedTasks: config.clusterMaxWatchedTasks,
    },
  });
  core.metrics.sources.tasksRunning = () => scheduler.size;
  const svc = new ExecService({
    config,
    repo,
    writer,
    scheduler,
    fleet: relay.port,
    audit: core.audit,
    log,
    select: (s) => selectAgents(fleet, s, undefined, selectorLimits(config)),
    nodeId: config.nodeId,
    ownedElsewhere: (owner) => relay.ownedElsewhere(owner, () => cluster.nodes()),
    takeoverPendingSec: (owner) =>
      cluster.enabled && owner != null && owner !== config.nodeId && !cluster.nodes().includes(owner)
        ? Math.max(1, Math.ceil(config.clusterLeaseTtlMs / 1000))
        : null,
    cancelRemote: (owner, taskId, actor) => relay.cancelRemote(owner, taskId, actor),
    forwardReport: (owner, agentId, m) => relay.forward(owner, agentId, m),
    relays: (executionId) => relay.relays(executionId),
  });
  let sweepTimer: NodeJS.Timeout | undefined;
  let fenceTimer: NodeJS.Timeout | undefined;
  const unsubs: Array<() => void> = [];

  const takeover = new Takeover({
    repo,
    scheduler,
    relay,
    nodeId: config.nodeId,
    batchTasks: config.takeoverBatchTasks,
    audit: core.audit,
    tasksTakenOver: core.metrics.tasksTakenOver,
    log,
  });
  /** Cluster: active tasks another node owns now (taken over while this node was cut off) are forgotten. */
  let fenceChecking = false;
  const fenceCheck = async (): Promise<void> => {
    const ids = scheduler.activeTaskIds();
    if (fenceChecking || (ids.length === 0 && !takeover.pending)) return;
    fenceChecking = true;
    try {
      await takeover.retry();
      for (const [taskId, owner] of await repo.ownedByOthers(ids, config.nodeId)) {
        if (scheduler.release(taskId)) log.warn({ taskId, owner }, 'another server node took this task over (this node was cut off); stopped running it here');
      }
    } catch (err) {
      log.warn({ err }, 'could not check the ownership of active tasks');
    } finally {
      fenceChecking = false;
    }
  };

  // Connect hooks run once the welcome is written: reconcile (resume, dispatch) at once.
  fleet.onConnect((agentId, hello) => {
    svc.connected(agentId, hello);
    relay.connected(agentId, hello);
  });
  fleet.onDisconnect((agentId) => {
    gate.forget(agentId);
    svc.disconnected(agentId);
  });

  return {
    agentHandlers: {
      // Reports for an execution another node runs go to that node (the relay); the rest here.
      'exec.started': (ctx, m) => void (relay.report(ctx.agentId, m) || svc.started(ctx.agentId, m)),
      'exec.finished': (ctx, m) => void (relay.report(ctx.agentId, m) || svc.finished(ctx.agentId, m)),
      'exec.rejected': (ctx, m) => void (relay.report(ctx.agentId, m) || svc.rejected(ctx.agentId, m)),
    },
    consoleHandlers: {
      'task.subscribe': async (ch, m) => {
        // Subscribe before reading the snapshot: an update that lands while the read runs is
        // delivered rather than lost (the snapshot sent after it is at least as new).
        const fresh = !fanout.has(ch, m.taskId);
        fanout.subscribe(ch, m.taskId, m.output);
        // Another node may run it: its owner sends the live output here too.
        relay.watch(m.taskId);
        if (fresh) ch.onClose(() => relay.unwatched(m.taskId));
        try {
          const t = await svc.getTask(m.taskId);
          const { executions: _e, ...task } = t;
          ch.send({ type: 'task.updated', task });
        } catch (err) {
          fanout.unsubscribe(ch, m.taskId);
          relay.unwatched(m.taskId);
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
      'task.unsubscribe': (ch, m) => {
        fanout.unsubscribe(ch, m.taskId);
        relay.unwatched(m.taskId);
      },
    },
    execOutput: (ctx, executionId, stream, seq, data) => {
      fleet.touch(ctx.agentId, ctx.channel.linkId);
      // Another node's execution: to its owner (the relay pauses this socket while that owner's writer is behind).
      if (relay.output(ctx.agentId, ctx.channel, executionId, stream, seq, data)) return;
      svc.output(ctx.agentId, executionId, stream, seq, data);
      // Database behind: stop reading this agent's socket (see ReadGate).
      gate.admit(ctx.agentId, ctx.channel);
    },
    service: svc,
    followFailures: (wanted) => void failureFollowers.push(wanted),
    routes: execRoutes(svc, repo),
    async start() {
      relay.start({
        started: (a, m) => svc.started(a, m),
        output: (a, e, s, q, d) => svc.output(a, e, s, q, d),
        finished: (a, m) => svc.finished(a, m),
        rejected: (a, m) => svc.rejected(a, m),
        cancel: (taskId, actor) => svc.cancelForNode(taskId, actor),
      });
      const restored = await scheduler.restore();
      if (restored.tasks) log.info(restored, 'resumed active tasks');
      if (cluster.enabled && restored.tasks) {
        const resumed = scheduler.resumeConnected();
        if (resumed) log.info({ resumed }, 'asked agents on other nodes to resend the output of executions they run for this node');
      }
      unsubs.push(bus.subscribe('execution.updated', (p) => fanout.execution(p.execution.taskId, p.execution)));
      sweepTimer = setInterval(() => scheduler.sweep(), Math.min(1000, Math.max(100, reconcileTimeoutMs / 4)));
      sweepTimer.unref();
      if (cluster.enabled) {
        unsubs.push(cluster.onNodeLost((dead) => takeover.takeOver(dead)));
        fenceTimer = setInterval(() => void fenceCheck(), config.clusterLeaseTtlMs);
        fenceTimer.unref();
      }
    },
    async stop() {
      clearInterval(sweepTimer);
      clearInterval(fenceTimer);
      relay.stop();
      for (const u of unsubs) u();
      scheduler.stop();
      await writer.stop();
      await threaded?.close();
    },
  };
}
