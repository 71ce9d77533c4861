import { execDenial, RejectCode, type ServerMessage } from '../../protocol/index.js';
import type { AgentCapability, AgentContext, HelloExecutionT } from '../capability.js';
import { verifyScriptSignature, type Policy } from '../policy.js';
import { detectContainment, sweepOrphans } from './containment.js';
import { Journal } from './journal.js';
import { ResultStore } from './results.js';
import { Run, type RunLimits } from './run.js';

/** One execution's limits (see RunLimits): the agent config's (agent/config.ts), and two fixed timings. */
export function runLimits(cfg: AgentContext['cfg']): RunLimits {
  return {
    coalesceMs: 5,
    drainMs: 500,
    chunkBytes: cfg.execOutputChunkBytes,
    killGraceMs: cfg.execKillGraceSec * 1000,
    bufferBytes: cfg.execBufferBytes,
    highWaterBytes: cfg.execHighWaterBytes,
    lowWaterBytes: cfg.execLowWaterBytes,
  };
}

/**
 * Script execution: runs exec.run exactly once per execution id (on-disk journal), streams its
 * output, survives disconnects (runs go on, output and results are kept and delivered after
 * exec.resume) and forgets an execution only when the server acks its stored result. Finished
 * results (with the output still held) are journaled on disk until then, so an agent restart
 * between the end of a script and the server's ack loses nothing.
 */
export function createExecutor(ctx: AgentContext): AgentCapability<'exec.run' | 'exec.cancel' | 'exec.resume' | 'exec.ack'> & {
  /** Executions still running or finished-but-undelivered, for hello. */
  helloExecutions(): HelloExecutionT[];
  running(): number;
  /**
   * Agent stopping: lets running scripts finish for up to `drainMs`, cancels the rest (reason
   * `agent stopping`, whole tree), then waits up to `reportMs` for the server to ack the results
   * (unacked ones stay journaled and are reported at the next start). No new exec.run is taken.
   */
  drain(drainMs: number, reportMs: number): Promise<void>;
} {
  const { link, log } = ctx;
  const limits = runLimits(ctx.cfg);
  const journal = new Journal(ctx.state.dir, ctx.cfg.execJournalKeep);
  const runs = new Map<string, Run>();
  let stopping = false;
  const c = detectContainment();
  log.info(
    { systemd: c.systemd, cgroup: c.hierarchy ? `${c.hierarchy.kind}:${c.hierarchy.root}` : null, why: c.hierarchy ? undefined : c.why },
    'execution containment',
  );
  const orphans = sweepOrphans(ctx.state.agentId, (o, msg) => log.info(o, msg));
  if (orphans) log.warn({ killed: orphans }, 'killed processes left by executions of a previous agent run');
  const results = new ResultStore(ctx.state.dir);
  /** Journals a finished result until the server acks it (see ResultStore). */
  const persist = (run: Run): void => {
    const r = run.snapshot();
    try {
      results.save(r);
    } catch (err) {
      // Most likely a full disk: keep the result itself at least, its output marked as cut.
      log.error({ executionId: r.executionId, err }, 'could not journal the result with its output; journaling it without');
      try {
        results.save({ ...r, chunks: [], truncated: r.truncated || r.chunks.length > 0 });
      } catch (err2) {
        log.error({ executionId: r.executionId, err: err2 }, 'could not journal the result; it is kept in memory only');
      }
    }
  };
  // Results finished before a restart (or crash) and never acked: reported again in hello.
  for (const saved of results.loadAll((file, why) => log.error({ file, why }, 'unreadable execution result in the journal; removed'))) {
    runs.set(saved.executionId, new Run(saved, ctx.state.agentId, link, log, limits, () => {}));
  }
  if (runs.size) log.info({ results: runs.size }, 'unacknowledged execution results restored from the journal');

  return {
    handlers: {
      'exec.run': (m) => {
        if (stopping) {
          // Not journaled, so not refused later: the server, which still has it dispatched and
          // unconfirmed, sends it again when this agent is back.
          log.info({ executionId: m.executionId }, 'exec.run while the agent is stopping; not started');
          return;
        }
        if (runs.has(m.executionId)) {
          log.info({ executionId: m.executionId }, 'exec.run repeated for an execution in progress; ignored');
          return;
        }
        // The host's policy, whatever the server decided. A refusal is not journaled: it does not
        // run anything, and the same answer is given if the server sends it again.
        const policy = ctx.policy();
        const denied = policyDenial(policy, m);
        if (denied) {
          log.warn({ executionId: m.executionId, taskId: m.taskId, interpreter: m.interpreter, reason: denied }, 'execution refused by host policy');
          link.send({ type: 'exec.rejected', executionId: m.executionId, reason: denied, code: RejectCode.policyDenied });
          return;
        }
        if (!journal.add(m.executionId)) {
          link.send({
            type: 'exec.rejected',
            executionId: m.executionId,
            reason: 'duplicate: this agent already received this execution',
            code: RejectCode.duplicate,
          });
          return;
        }
        // The output buffer is the live setting at the start of each run (server config, capped by policy).
        const run = new Run(m, ctx.state.agentId, link, log, { ...limits, bufferBytes: ctx.settings().execBufferBytes }, persist, policy.view.runAs);
        runs.set(m.executionId, run);
        log.info({ executionId: m.executionId, taskId: m.taskId, interpreter: m.interpreter }, 'execution starting');
        run.start();
      },
      'exec.cancel': (m) => {
        const run = runs.get(m.executionId);
        if (!run) {
          link.send({ type: 'exec.rejected', executionId: m.executionId, reason: 'unknown execution (not running here)', code: RejectCode.unknownExecution });
          return;
        }
        // After a reconnect the server may cancel without resuming (it no longer wants the output):
        // go live anyway so the result is reported and then acked, not kept until the next hello.
        if (!run.live) run.resume(run.seq);
        run.terminate('cancelled');
      },
      'exec.resume': (m) => {
        const run = runs.get(m.executionId);
        if (!run) {
          link.send({ type: 'exec.rejected', executionId: m.executionId, reason: 'unknown execution (not running here)', code: RejectCode.unknownExecution });
          return;
        }
        run.resume(m.fromSeq);
      },
      'exec.ack': (m) => {
        const run = runs.get(m.executionId);
        if (run && !run.running) {
          runs.delete(m.executionId);
          results.remove(m.executionId);
        }
      },
    },
    onDisconnected() {
      for (const r of runs.values()) r.disconnected();
    },
    onPolicy(policy) {
      for (const r of runs.values()) {
        if (!r.running || !r.msg) continue;
        const denied =
          policyDenial(policy, r.msg) ??
          ((policy.view.runAs ?? null) !== r.user ? `host policy now runs scripts as ${policy.view.runAs ?? "the agent's user"}` : null);
        if (!denied) continue;
        log.warn({ executionId: r.id, reason: denied }, 'host policy changed: cancelling a running execution it forbids');
        r.terminate('cancelled', `host policy changed: ${denied}`.slice(0, 1024));
      }
    },
    helloExecutions: () => [...runs.values()].map((r) => ({ executionId: r.id, state: r.running ? 'running' : 'finished', nextSeq: r.seq })),
    running: () => {
      let n = 0;
      for (const r of runs.values()) if (r.running) n++;
      return n;
    },
    async drain(drainMs, reportMs) {
      stopping = true;
      const running = () => [...runs.values()].filter((r) => r.running);
      if (running().length) log.info({ running: running().length, drainSec: drainMs / 1000 }, 'agent stopping: waiting for running executions');
      await until(() => running().length === 0, drainMs);
      for (const r of running()) {
        log.warn({ executionId: r.id }, 'agent stopping: cancelling a running execution');
        r.terminate('cancelled', 'agent stopping');
      }
      // SIGTERM, SIGKILL after the grace, then the pipes' drain: the run completes and journals.
      await until(() => running().length === 0, limits.killGraceMs + limits.drainMs + 3000);
      // Results being delivered on this connection: give the server a moment to store and ack them.
      await until(() => !link.connected() || ![...runs.values()].some((r) => r.live), reportMs);
      const unacked = runs.size;
      if (unacked) log.info({ results: unacked }, 'agent stopping: results not yet acknowledged stay journaled for the next start');
    },
    async stop() {
      for (const r of runs.values()) r.kill();
      journal.close();
    },
  };
}

/** Resolves when `done()` holds (checked every 50 ms) or after `ms`. */
async function until(done: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, end - Date.now()))));
}

/** Why the host policy forbids running `m` (null when allowed): the agent's own check, whatever the server decided. */
function policyDenial(policy: Policy, m: ServerMessage<'exec.run'>): string | null {
  return (
    execDenial(policy.view, m.interpreter, m.signature != null) ??
    (policy.view.requireSignedScripts && !verifyScriptSignature(policy.keys, m, m.signature ?? '')
      ? "script signature does not verify with the host's scriptPublicKeys (script, interpreter, arguments, environment or directory changed since signing, or signed by another key)"
      : null)
  );
}
