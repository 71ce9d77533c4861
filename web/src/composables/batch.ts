/**
 * Coalescing many changes into one piece of work, written once for the whole console.
 *
 * - `frameBatcher`: many socket events, one publish per animation frame (so 10,000 executions
 *   changing cost one re-render per frame, never one per event). Hidden or throttled pages may
 *   not run animation frames, so a timer publishes anyway, just less often.
 * - `coalesced`: an event that asks for a refetch schedules one, at most once per interval
 *   (trailing: the work runs `ms` after the first request, covering every request meanwhile);
 *   cancelled when the calling component unmounts.
 */
import { getCurrentInstance, onBeforeUnmount } from 'vue';

/** How long a hidden page waits for a publish when no animation frame comes. */
export const FRAME_FALLBACK_MS = 250;

export interface Batcher {
  /** Asks for a publish; any number of calls before it runs cost one. */
  schedule(): void;
  /** Drops a scheduled publish (the owner is going away). */
  cancel(): void;
}

/** One `publish()` per animation frame however often `schedule()` is called. */
export function frameBatcher(publish: () => void, fallbackMs = FRAME_FALLBACK_MS): Batcher {
  // Read from globalThis: the unit tests run this module in Node (no DOM types, no animation frames).
  const g = globalThis as unknown as { requestAnimationFrame?: (cb: () => void) => number; cancelAnimationFrame?: (id: number) => void };
  let frame = 0;
  let fallback: ReturnType<typeof setTimeout> | null = null;
  let scheduled = false;
  const cancel = () => {
    if (frame) g.cancelAnimationFrame?.(frame);
    if (fallback) clearTimeout(fallback);
    frame = 0;
    fallback = null;
    scheduled = false;
  };
  const run = () => {
    cancel();
    publish();
  };
  return {
    schedule() {
      if (scheduled) return;
      scheduled = true;
      if (g.requestAnimationFrame) frame = g.requestAnimationFrame(run);
      fallback = setTimeout(run, fallbackMs);
    },
    cancel,
  };
}

/**
 * `fn` at most once per `ms`: the first request starts the interval, later ones within it are
 * covered by the same run. Called in a component's setup, the pending run is dropped on unmount.
 */
export function coalesced(fn: () => unknown, ms: number): Batcher & { readonly pending: boolean } {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  if (getCurrentInstance()) onBeforeUnmount(cancel);
  return {
    schedule() {
      timer ??= setTimeout(() => {
        timer = null;
        void fn();
      }, ms);
    },
    cancel,
    get pending() {
      return timer !== null;
    },
  };
}
