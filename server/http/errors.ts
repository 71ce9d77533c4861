import type { ErrorRequestHandler } from 'express';
import { ZodError } from 'zod';
import type { ErrorCode } from '../../protocol/index.js';
import { dbFailure } from '../db/failures.js';

const STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  invalid_message: 400,
  unknown_type: 400,
  selector_syntax: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  lost_unconfirmed: 409,
  payload_too_large: 413,
  rate_limited: 429,
  limit_exceeded: 422,
  agent_offline: 409,
  unavailable: 503,
  cross_site: 403,
  database_unavailable: 503,
  insufficient_storage: 507,
  internal: 500,
  policy_denied: 403,
};

/** Retry-After (seconds) on answers the caller should simply repeat once the database is back. */
export const DB_RETRY_AFTER_SEC = 5;
/** Retry-After (seconds) while the data disk is full (freeing space is an operator's job: slower). */
export const NO_SPACE_RETRY_AFTER_SEC = 30;

/** An error with a stable code; the HTTP status follows from the code unless given. */
export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    status?: number,
    readonly details?: Record<string, unknown>,
    /** Sent as Retry-After (seconds): the caller should repeat the request then. */
    readonly retryAfterSec?: number,
  ) {
    super(message);
    this.status = status ?? STATUS[code];
  }
}

export const notFound = (what: string) => new ApiError('not_found', `${what} not found`);

/** Maps errors to `{ error: { code, message } }`; never sends a stack trace. */
export function errorHandler(log: { error(o: object, m: string): void }): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (err instanceof ApiError) {
      if (err.code === 'database_unavailable') res.set('Retry-After', String(DB_RETRY_AFTER_SEC));
      if (err.code === 'insufficient_storage') res.set('Retry-After', String(NO_SPACE_RETRY_AFTER_SEC));
      if (err.retryAfterSec !== undefined) res.set('Retry-After', String(err.retryAfterSec));
      res.status(err.status).json({ error: { code: err.code, message: err.message, ...(err.details ?? {}) } });
      return;
    }
    if (err instanceof ZodError) {
      const msg = err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
      res.status(400).json({ error: { code: 'bad_request', message: msg } });
      return;
    }
    const e = err as { type?: string; status?: number };
    if (e.type === 'entity.too.large') {
      res.status(413).json({ error: { code: 'payload_too_large', message: 'request body too large' } });
      return;
    }
    if (e.type === 'entity.parse.failed') {
      res.status(400).json({ error: { code: 'bad_request', message: 'invalid JSON body' } });
      return;
    }
    // The database away or the disk full is a condition to wait out, not a bug: a 503/507 with
    // Retry-After, logged without a stack (an outage makes many of them).
    const failure = dbFailure(err);
    if (failure === 'unavailable') {
      res
        .status(503)
        .set('Retry-After', String(DB_RETRY_AFTER_SEC))
        .json({ error: { code: 'database_unavailable', message: 'the database is unavailable; retry later' } });
      return;
    }
    if (failure === 'no_space') {
      res
        .status(507)
        .set('Retry-After', String(NO_SPACE_RETRY_AFTER_SEC))
        .json({ error: { code: 'insufficient_storage', message: 'the server has no disk space left for this write; retry later' } });
      return;
    }
    log.error({ err, path: req.path }, 'unhandled request error');
    res.status(500).json({ error: { code: 'internal', message: 'internal error' } });
  };
}
