/** Hands a multi-selection from the agents table to another view (too many ids for a URL). */
import { shallowRef } from 'vue';

export interface PendingTargets { agentIds: string[] }
export const pendingTargets = shallowRef<PendingTargets | null>(null);

/** Takes (and clears) the pending selection. */
export function takePendingTargets(): PendingTargets | null {
  const t = pendingTargets.value;
  pendingTargets.value = null;
  return t;
}
