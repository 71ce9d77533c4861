import type { Capability, Core } from '../core.js';

/** Agent updates and rollouts (issue 4). PLACEHOLDER until the update capability lands. */
export function createUpdates(_core: Core): Capability<'update.status', never> {
  return { agentHandlers: { 'update.status': () => {} }, consoleHandlers: {} };
}
