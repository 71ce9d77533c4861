/** Colours and order of execution/task states. */
import type { ExecutionState } from '../../../../protocol/common';

export const EXEC_STATES: readonly ExecutionState[] = [
  'pending',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'timeout',
  'cancelled',
  'lost',
  'skipped',
  'policy_denied',
];
export const FINAL_STATES: ReadonlySet<ExecutionState> = new Set(['succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'skipped', 'policy_denied']);
export type TagType = 'default' | 'info' | 'success' | 'warning' | 'error';
export function stateType(s: string): TagType {
  switch (s) {
    case 'succeeded':
      return 'success';
    case 'failed':
    case 'lost':
    case 'rolled_back':
    case 'policy_denied':
      return 'error';
    case 'timeout':
    case 'cancelled':
    case 'paused':
    case 'awaiting_approval':
      return 'warning';
    case 'running':
    case 'soaking':
    case 'dispatched':
    case 'downloading':
    case 'verifying':
    case 'installing':
    case 'restarting':
      return 'info';
    default:
      return 'default';
  }
}

/** A one-line title for a task: its name, else its first script line that is not a shebang. */
export function taskTitle(t: { id: string; name?: string; interpreter: string; script?: string }): string {
  if (t.name) return t.name;
  const line = (t.script ?? '').split('\n').find((l) => l.trim() !== '' && !l.startsWith('#!'));
  return line ? `${t.interpreter}: ${line}` : `${t.interpreter} task ${t.id.slice(0, 8)}`;
}
