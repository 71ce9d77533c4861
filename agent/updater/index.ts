import type { AgentCapability, AgentContext } from '../capability.js';

/** Self-update (issue 4). PLACEHOLDER: reports every update as failed until the updater lands. */
export function createUpdater(ctx: AgentContext): AgentCapability<'update'> {
  return {
    handlers: {
      update: (m) => void ctx.link.send({ type: 'update.status', rolloutId: m.rolloutId, version: m.version, state: 'failed', reason: 'updater not implemented' }),
    },
  };
}
