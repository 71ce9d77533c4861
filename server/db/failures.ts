/**
 * What kind of failure a database error is, for the callers that must answer or retry
 * differently: `unavailable` (the database cannot be reached or does not answer in time: retry
 * later), `no_space` (the disk under the database or the data dir is full: retry once space is
 * freed), or null (anything else: a bug or a constraint, not a condition to wait out).
 */
export type DbFailure = 'unavailable' | 'no_space';

/** Network and protocol errors of mysql2 and Node that mean "the database is not reachable now". */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR',
  'PROTOCOL_ENQUEUE_AFTER_QUIT',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_LOCK_WAIT_TIMEOUT',
  'ER_QUERY_INTERRUPTED',
  'ER_CLIENT_INTERACTION_TIMEOUT',
  'SQLITE_BUSY',
  'SQLITE_LOCKED',
]);
/** Errors that mean the disk is full (SQLite reports it as FULL, or as an I/O error on write). */
const NO_SPACE_CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL', 'ER_RECORD_FILE_FULL', 'ER_DISK_FULL']);

/** Classifies a database (or data-dir write) error; null for errors that are not an outage. */
export function dbFailure(err: unknown): DbFailure | null {
  for (
    let e = err as { code?: unknown; name?: unknown; message?: unknown; cause?: unknown; fatal?: unknown } | null, depth = 0;
    e && depth < 4;
    e = e.cause as typeof e, depth++
  ) {
    const code = typeof e.code === 'string' ? e.code : '';
    const message = typeof e.message === 'string' ? e.message : '';
    if (NO_SPACE_CODES.has(code) || /SQLITE_FULL|database or disk is full|No space left on device/i.test(message)) return 'no_space';
    if (code.startsWith('SQLITE_IOERR') && /disk|space|write/i.test(message)) return 'no_space';
    if (UNAVAILABLE_CODES.has(code)) return 'unavailable';
    // knex: the pool could not hand out a connection in time (every connection busy or unreachable).
    if (e.name === 'KnexTimeoutError' || /Timeout acquiring a connection/.test(message)) return 'unavailable';
    // mysql2: a connection that broke cannot run more commands.
    if (e.fatal === true || /connection is in closed state|Connection lost/i.test(message)) return 'unavailable';
  }
  return null;
}
