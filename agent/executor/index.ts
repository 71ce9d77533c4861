import type { AgentCapability, AgentContext, HelloExecutionT } from '../capability.js';

/** Script execution (issue 5). PLACEHOLDER: refuses every exec until the executor lands. */
export function createExecutor(ctx: AgentContext): AgentCapability<'exec.run' | 'exec.cancel' | 'exec.resume' | 'exec.ack'> & {
  /** Executions still running or finished-but-undelivered, for hello. */
  helloExecutions(): HelloExecutionT[];
  running(): number;
} {
  return {
    handlers: {
      'exec.run': (m) => void ctx.link.send({ type: 'exec.rejected', executionId: m.executionId, reason: 'executor not implemented' }),
      'exec.cancel': () => {},
      'exec.resume': () => {},
      'exec.ack': () => {},
    },
    helloExecutions: () => [],
    running: () => 0,
  };
}
