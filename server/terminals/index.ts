import type { Capability, Core } from '../core.js';
import type { AgentBinaryHandlers, ConsoleBinaryHandlers } from '../ws/handlers.js';

type ConsoleTermTypes = 'term.open' | 'term.attach' | 'term.detach' | 'term.resize' | 'term.close' | 'term.ack';

/** Remote terminals (issue 3). PLACEHOLDER until the terminal capability lands. */
export function createTerminals(_core: Core): Capability<'term.opened' | 'term.exit', ConsoleTermTypes> & {
  agentTermData: AgentBinaryHandlers['termData'];
  consoleTermData: ConsoleBinaryHandlers['termData'];
} {
  const unavailable = (ch: { send(m: { type: 'error'; code: string; message: string }): boolean }) =>
    void ch.send({ type: 'error', code: 'unavailable', message: 'terminals not implemented yet' });
  return {
    agentHandlers: { 'term.opened': () => {}, 'term.exit': () => {} },
    consoleHandlers: {
      'term.open': unavailable, 'term.attach': unavailable, 'term.detach': () => {}, 'term.resize': () => {},
      'term.close': () => {}, 'term.ack': () => {},
    },
    agentTermData: () => {},
    consoleTermData: () => {},
  };
}
