/** Pure helpers of the files pages (no DOM, no requests): modes, waves, progress, rollback, text detection. */
import type { DistributionTargetState, DistributionView, FileHostView, FileRevisionView } from '../../../../protocol/file-views.js';

/** `0o640` → `"0640"`. */
export function modeText(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

/** `"640"`, `"0640"` → 0o640; null when it is not an octal mode. */
export function parseMode(s: string): number | null {
  const t = s.trim();
  if (!/^0?[0-7]{3,4}$/.test(t)) return null;
  const n = Number.parseInt(t, 8);
  return n <= 0o7777 ? n : null;
}

/** `"1, 10%, 100%"` → `[1, "10%", "100%"]` (the API checks each entry). */
export function parseWaves(s: string): Array<number | string> {
  return s
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((w) => (/^\d+$/.test(w) ? Number(w) : w));
}

/** Target states that are final. */
export const TARGET_DONE: ReadonlySet<DistributionTargetState> = new Set(['applied', 'unchanged', 'removed', 'failed', 'skipped']);

/** How far a distribution is: targets finished, failed, and the percentage finished. */
export function progressOf(d: Pick<DistributionView, 'counts' | 'total'>): { done: number; failed: number; percent: number } {
  let done = 0;
  for (const [state, n] of Object.entries(d.counts)) if (TARGET_DONE.has(state as DistributionTargetState)) done += n ?? 0;
  const failed = d.counts.failed ?? 0;
  return { done, failed, percent: d.total ? Math.round((done / d.total) * 100) : 100 };
}

/** `applied 2 · failed 1` in the order targets move through. */
export function countsText(counts: DistributionView['counts']): string {
  const order: DistributionTargetState[] = ['pending', 'sending', 'applied', 'unchanged', 'removed', 'failed', 'skipped'];
  return order
    .filter((s) => counts[s])
    .map((s) => `${s} ${counts[s]}`)
    .join(' · ');
}

/** Hosts per revision they hold (what a rollback would move away from). */
export function heldRevisions(hosts: readonly FileHostView[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const h of hosts) m.set(h.revision, (m.get(h.revision) ?? 0) + 1);
  return m;
}

/**
 * The revision a plain "roll back" goes to (as the server computes it without a revision): the one
 * before the newest revision any host holds, or before the latest when no host holds any. Null: none.
 */
export function previousRevision(hosts: readonly FileHostView[], latestRevision: number): number | null {
  const held = Math.max(0, ...hosts.map((h) => h.revision));
  const r = (held || latestRevision) - 1;
  return r >= 1 ? r : null;
}

/** Whether a revision may be offered as text (view, diff): small enough to fetch. */
export const TEXT_MAX_BYTES = 512 * 1024;
export function textCandidate(r: Pick<FileRevisionView, 'size'>): boolean {
  return r.size <= TEXT_MAX_BYTES;
}

/** Decodes bytes as UTF-8 text, or null when they are binary (a NUL byte or invalid UTF-8). */
export function asText(bytes: Uint8Array): string | null {
  if (bytes.includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/** A host's file state as a tag colour. */
export function hostStateType(s: FileHostView['state']): 'success' | 'warning' | 'error' {
  return s === 'ok' ? 'success' : s === 'drifted' ? 'warning' : 'error';
}

/** A distribution target state as a tag colour. */
export function targetStateType(s: DistributionTargetState): 'default' | 'info' | 'success' | 'warning' | 'error' {
  switch (s) {
    case 'applied':
    case 'unchanged':
    case 'removed':
      return 'success';
    case 'failed':
      return 'error';
    case 'skipped':
      return 'warning';
    case 'sending':
      return 'info';
    default:
      return 'default';
  }
}
