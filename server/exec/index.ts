import type { Capability, Core } from '../core.js';
import type { AgentBinaryHandlers } from '../ws/handlers.js';

/** Remote execution (issue 5). PLACEHOLDER until the exec capability lands. */
export function createExec(_core: Core): Capability<'exec.started' | 'exec.finished' | 'exec.rejected', 'task.subscribe' | 'task.unsubscribe'> & {
  execOutput: AgentBinaryHandlers['execOutput'];
} {
  return {
    agentHandlers: {
      'exec.started': () => {},
      'exec.finished': () => {},
      'exec.rejected': () => {},
    },
    consoleHandlers: {
      'task.subscribe': (ch) => void ch.send({ type: 'error', code: 'unavailable', message: 'tasks not implemented yet' }),
      'task.unsubscribe': () => {},
    },
    execOutput: () => {},
  };
}
