import type { Db } from './db.js';

export type Readiness = { ok: true } | { ok: false; error: string };

/**
 * The database half of /readyz. At most one probe (`select 1`) is in flight, however often the
 * endpoint is polled, so a partitioned database does not collect a hung query per poll; a caller
 * waits at most `timeoutMs` for it and is told "not ready" when it has not answered by then.
 */
export class DbReadiness {
  private inflight: Promise<void> | null = null;

  constructor(
    private readonly db: Db,
    private readonly timeoutMs: number,
  ) {}

  async check(): Promise<Readiness> {
    const probe = (this.inflight ??= this.db
      .raw('select 1')
      .then(() => undefined)
      .finally(() => {
        this.inflight = null;
      }));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), this.timeoutMs);
    });
    try {
      const r = await Promise.race([probe.then(() => 'ok' as const), late]);
      return r === 'ok' ? { ok: true } : { ok: false, error: `the database did not answer within ${this.timeoutMs} ms` };
    } catch (err) {
      return { ok: false, error: String((err as Error).message ?? err).slice(0, 200) };
    } finally {
      clearTimeout(timer);
    }
  }
}
