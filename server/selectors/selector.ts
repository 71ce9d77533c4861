import type { AgentRecord } from '../fleet/registry.js';

/** A selector syntax error, naming the position (0-based offset) and what was expected there. */
export class SelectorError extends Error {
  constructor(readonly position: number, readonly expected: string, message: string) {
    super(message);
  }
}

export type AgentPredicate = (a: AgentRecord) => boolean;

/**
 * Compiles a selector (see DESIGN.md) into a predicate over agents.
 * PLACEHOLDER: only `all` is supported until the selector language lands (issue 5).
 */
export function compileSelector(src: string): AgentPredicate {
  if (src.trim() === 'all' || src.trim() === '') return () => true;
  throw new SelectorError(0, '`all`', 'selector language not implemented yet');
}
