import type { AgentCapability, AgentContext } from '../capability.js';

/** PTY terminals (issue 3). PLACEHOLDER: refuses every session until the PTY host lands. */
export function createPtyHost(ctx: AgentContext): AgentCapability<'term.open' | 'term.resize' | 'term.close' | 'term.ack'> & {
  onTermData(sessionId: string, data: Uint8Array): void;
  count(): number;
} {
  return {
    handlers: {
      'term.open': (m) => void ctx.link.send({ type: 'term.exit', sessionId: m.sessionId, exitCode: null, signal: null, reason: 'terminals not implemented' }),
      'term.resize': () => {},
      'term.close': () => {},
      'term.ack': () => {},
    },
    onTermData: () => {},
    count: () => 0,
  };
}
