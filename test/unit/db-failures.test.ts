import { describe, expect, it } from 'vitest';
import { dbFailure } from '../../server/db/failures.js';

const err = (o: Record<string, unknown>) => Object.assign(new Error(String(o['message'] ?? 'x')), o);

describe('dbFailure: which database errors are an outage to wait out', () => {
  it('network and pool errors of mysql2 and knex are "unavailable"', () => {
    for (const code of [
      'ECONNREFUSED',
      'ECONNRESET',
      'ETIMEDOUT',
      'PROTOCOL_CONNECTION_LOST',
      'PROTOCOL_SEQUENCE_TIMEOUT',
      'ER_SERVER_SHUTDOWN',
      'SQLITE_BUSY',
    ]) {
      expect(dbFailure(err({ code })), code).toBe('unavailable');
    }
    const acquire = err({ message: 'Knex: Timeout acquiring a connection. The pool is probably full.' });
    acquire.name = 'KnexTimeoutError';
    expect(dbFailure(acquire)).toBe('unavailable');
    expect(dbFailure(err({ message: "Can't add new command when connection is in closed state", fatal: true }))).toBe('unavailable');
    // Wrapped by a caller (Error cause).
    expect(dbFailure(new Error('write failed', { cause: err({ code: 'ECONNREFUSED' }) }))).toBe('unavailable');
  });

  it('a full disk is "no_space" (SQLite and Node)', () => {
    expect(dbFailure(err({ code: 'SQLITE_FULL', message: 'database or disk is full' }))).toBe('no_space');
    expect(dbFailure(err({ code: 'ENOSPC', message: 'no space left on device' }))).toBe('no_space');
    expect(dbFailure(err({ code: 'SQLITE_IOERR_WRITE', message: 'disk I/O error' }))).toBe('no_space');
    expect(dbFailure(err({ code: 'ER_RECORD_FILE_FULL' }))).toBe('no_space');
  });

  it('anything else is not an outage (a bug or a constraint stays a 500 or its own code)', () => {
    expect(dbFailure(err({ code: 'ER_DUP_ENTRY' }))).toBeNull();
    expect(dbFailure(err({ code: 'SQLITE_CONSTRAINT_UNIQUE' }))).toBeNull();
    expect(dbFailure(new TypeError('x is undefined'))).toBeNull();
    expect(dbFailure(null)).toBeNull();
    expect(dbFailure('a string')).toBeNull();
  });
});
