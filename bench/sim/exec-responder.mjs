// Built-in handler module for the simulated fleet: answers `exec.run` like a fast agent would.
// exec.started → one EXEC_OUTPUT frame (stdout, seq 0) → exec.finished { outputSeq: 1 }; keeps the
// result until the server's exec.ack (resending it on exec.resume), as the real agent's journal does.
// Options (fleet `handlerOptions`): outputBytes (default 64), delayMs before finishing (default 0),
// exitCode (default 0).
import { encodeExecOutput } from './frames.mjs';

/** @param {{ options: Record<string, unknown>, emit(event: object): void }} ctx */
export default function setup(ctx) {
  const outputBytes = Number(ctx.options.outputBytes ?? 64);
  const delayMs = Number(ctx.options.delayMs ?? 0);
  const exitCode = Number(ctx.options.exitCode ?? 0);
  const payload = Buffer.alloc(outputBytes, 0x61);
  /** executionId → finished message, per agent, until acked. */
  const results = new WeakMap();
  const pending = (agent) => {
    let m = results.get(agent);
    if (!m) results.set(agent, (m = new Map()));
    return m;
  };

  const finish = (agent, m, startedAt) => {
    const done = {
      type: 'exec.finished',
      executionId: m.executionId,
      status: exitCode === 0 ? 'succeeded' : 'failed',
      exitCode,
      signal: null,
      startedAt,
      finishedAt: Date.now(),
      outputSeq: 1,
      truncated: false,
    };
    pending(agent).set(m.executionId, done);
    agent.sendBinary(encodeExecOutput(m.executionId, 'stdout', 0, payload));
    agent.send(done);
    ctx.emit({ type: 'exec.finished', agentId: agent.id, executionId: m.executionId, taskId: m.taskId });
  };

  return {
    'exec.run'(agent, m) {
      const startedAt = Date.now();
      if (pending(agent).has(m.executionId)) {
        // Already ran (duplicate dispatch after a reconnect): the journal says so.
        agent.send({ type: 'exec.rejected', executionId: m.executionId, reason: 'already executed' });
        return;
      }
      agent.send({ type: 'exec.started', executionId: m.executionId, pid: 1000 + (agent.index % 30000), startedAt, containment: 'pgid' });
      ctx.emit({ type: 'exec.started', agentId: agent.id, executionId: m.executionId, taskId: m.taskId });
      if (delayMs > 0) setTimeout(() => finish(agent, m, startedAt), delayMs);
      else finish(agent, m, startedAt);
    },
    'exec.resume'(agent, m) {
      const done = pending(agent).get(m.executionId);
      if (!done) return;
      if (m.fromSeq === 0) agent.sendBinary(encodeExecOutput(m.executionId, 'stdout', 0, payload));
      agent.send(done);
    },
    'exec.ack'(agent, m) {
      pending(agent).delete(m.executionId);
      ctx.emit({ type: 'exec.acked', agentId: agent.id, executionId: m.executionId });
    },
    'exec.cancel'() {
      // Executions finish at once here; a cancel always arrives too late.
    },
    /** Executions this agent would name in hello (finished, not yet acked). */
    helloExecutions(agent) {
      return [...pending(agent).keys()].map((executionId) => ({ executionId, state: 'finished', nextSeq: 1 }));
    },
  };
}
