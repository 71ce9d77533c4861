import type { Knex } from 'knex';

/**
 * Retry of transactions the database aborted to resolve a lock conflict: InnoDB's deadlock
 * (ER_LOCK_DEADLOCK, 1213: it has rolled the whole transaction back) and a lock wait that timed
 * out (ER_LOCK_WAIT_TIMEOUT, 1205). Several nodes writing the same rows (a reconnect storm, a
 * hot enrollment token) meet these in normal operation; the transaction is sound and runs again
 * after a short, jittered pause (so the two parties do not collide again in lock step).
 */
export interface TxRetryPolicy {
  /** Further attempts after the first (MUSTER_DB_DEADLOCK_RETRIES). */
  retries: number;
  /** Upper bound of the first pause; doubles per attempt, each pause uniformly random below it (MUSTER_DB_DEADLOCK_BACKOFF_MS). */
  backoffMs: number;
}

/** The config defaults (server/config/config.ts). */
export const DEFAULT_TX_RETRY: TxRetryPolicy = { retries: 5, backoffMs: 20 };

const policies = new WeakMap<object, TxRetryPolicy>();

/** Sets the retry policy of a database's transactions (see `transaction`). */
export function setTxRetry(db: Knex, p: TxRetryPolicy): void {
  policies.set(db, p);
}

export function txRetryOf(db: Knex): TxRetryPolicy {
  return policies.get(db) ?? DEFAULT_TX_RETRY;
}

const CONFLICT_CODES = new Set(['ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT']);
const CONFLICT_ERRNOS = new Set([1213, 1205]);

/** True for an error that means "a lock conflict aborted this transaction; running it again is sound". */
export function isLockConflict(err: unknown): boolean {
  for (
    let e = err as { code?: unknown; errno?: unknown; cause?: unknown } | null, depth = 0;
    e && typeof e === 'object' && depth < 4;
    e = e.cause as typeof e, depth++
  ) {
    if (typeof e.code === 'string' && CONFLICT_CODES.has(e.code)) return true;
    if (typeof e.errno === 'number' && CONFLICT_ERRNOS.has(e.errno)) return true;
  }
  return false;
}

export interface RetryHooks {
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
  /** Called before each further attempt (attempt 1 is the first retry). */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

const sleepMs = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Runs `attempt` (a whole transaction: it must begin, run and commit anew each time) and runs it
 * again, at most `p.retries` more times, while it fails with a lock conflict. Other errors, and the
 * conflict after the last retry, are thrown as they are.
 */
export async function retryOnConflict<T>(attempt: (n: number) => Promise<T>, p: TxRetryPolicy, hooks: RetryHooks = {}): Promise<T> {
  const sleep = hooks.sleep ?? sleepMs;
  const random = hooks.random ?? Math.random;
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (n >= p.retries || !isLockConflict(err)) throw err;
      const delay = Math.floor(random() * p.backoffMs * 2 ** n);
      hooks.onRetry?.(err, n + 1, delay);
      await sleep(delay);
    }
  }
}

/** `db.transaction(fn)`, run again on a lock conflict under the database's policy (`fn` must be safe to run again). */
export function transaction<T>(db: Knex, fn: (trx: Knex.Transaction) => Promise<T>, hooks?: RetryHooks): Promise<T> {
  return retryOnConflict(() => db.transaction(fn), txRetryOf(db), hooks);
}
