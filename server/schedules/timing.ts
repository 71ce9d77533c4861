import { Cron } from 'croner';

/** When a schedule fires: a 5-field cron expression in an IANA time zone, or a fixed interval. */
export type Timing =
  { cron: string; timeZone: string; intervalSec: null; anchorAt: number } | { cron: null; timeZone: string; intervalSec: number; anchorAt: number };

/** Why a cron expression or time zone is unusable, or null. */
export function timingProblem(cron: string | null, timeZone: string): string | null {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
  } catch {
    return `unknown time zone "${timeZone}" (an IANA name such as Europe/Berlin or UTC)`;
  }
  if (cron === null) return null;
  if (cron.trim().split(/\s+/).length !== 5) return 'cron needs exactly 5 fields: minute hour day-of-month month day-of-week';
  try {
    const c = new Cron(cron, { timezone: timeZone, paused: true });
    if (!c.nextRun(new Date())) return 'the cron expression never fires';
  } catch (err) {
    return `invalid cron expression: ${(err as Error).message.replace(/^CronPattern: /, '')}`;
  }
  return null;
}

/** The first due time strictly after `after` (epoch ms), or null if there is none. */
export function nextAfter(t: Timing, after: number): number | null {
  if (t.cron === null) {
    const step = t.intervalSec * 1000;
    if (after < t.anchorAt) return t.anchorAt + step;
    return t.anchorAt + (Math.floor((after - t.anchorAt) / step) + 1) * step;
  }
  const next = new Cron(t.cron, { timezone: t.timeZone, paused: true }).nextRun(new Date(after));
  return next ? next.getTime() : null;
}

/** The next `n` due times after `after`. */
export function nextFires(t: Timing, after: number, n = 5): number[] {
  const out: number[] = [];
  let at = after;
  for (let i = 0; i < n; i++) {
    const next = nextAfter(t, at);
    if (next === null) break;
    out.push(next);
    at = next;
  }
  return out;
}
