/**
 * Hands a selection from the agents table to another view (too many ids for a URL): agents picked
 * one by one, or "all matching" as the selector itself (no ids are transferred).
 */
import { shallowRef } from 'vue';

export type PendingTargets = { agentIds: string[] } | { selector: string };
export const pendingTargets = shallowRef<PendingTargets | null>(null);

/** Takes (and clears) the pending selection. */
export function takePendingTargets(): PendingTargets | null {
  const t = pendingTargets.value;
  pendingTargets.value = null;
  return t;
}
