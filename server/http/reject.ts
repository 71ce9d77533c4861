import http from 'node:http';
import type { Duplex } from 'node:stream';
import { ErrorCode } from '../../protocol/index.js';

/** An error answer given outside express: while the server starts, and at a WebSocket upgrade. */
export interface Rejection {
  status: number;
  message: string;
  /** Defaults to the code the status stands for (401 → unauthorized, 503 → unavailable, …). */
  code?: ErrorCode;
  headers?: Record<string, string>;
}

const CODE_OF_STATUS: Partial<Record<number, ErrorCode>> = {
  400: ErrorCode.badRequest,
  401: ErrorCode.unauthorized,
  403: ErrorCode.forbidden,
  404: ErrorCode.notFound,
  413: ErrorCode.payloadTooLarge,
  429: ErrorCode.rateLimited,
  503: ErrorCode.unavailable,
};

/** The `{ error: { code, message } }` body every API error has, and its length. */
function errorBody(r: Rejection): { body: string; headers: Record<string, string> } {
  const body = JSON.stringify({ error: { code: r.code ?? CODE_OF_STATUS[r.status] ?? ErrorCode.internal, message: r.message } });
  return { body, headers: { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)), ...r.headers } };
}

/** A Retry-After value in [min, max] seconds: refused peers come back spread out, not all at once. */
export function retryAfter(minSec: number, maxSec = minSec): Record<string, string> {
  return { 'Retry-After': String(minSec + Math.floor(Math.random() * (maxSec - minSec + 1))) };
}

/** Answers a plain HTTP request with an API error (used before express serves requests). */
export function rejectRequest(res: http.ServerResponse, r: Rejection): void {
  const { body, headers } = errorBody(r);
  res.writeHead(r.status, headers).end(body);
}

/**
 * Refuses an upgrade with a real HTTP status before any WebSocket exists, the way ws's
 * abortHandshake does (status line from http.STATUS_CODES, `Connection: close`), with the API's
 * JSON error body. The socket is half-closed, not destroyed: a reset could discard the answer
 * before the client read it.
 */
export function rejectUpgrade(socket: Duplex, r: Rejection): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const { body, headers } = errorBody(r);
  const head = [
    `HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status] ?? 'Error'}`,
    'Connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}
