/**
 * REST client for /api. Errors become ApiError with the server's stable code; a 401 on any call
 * but the login itself sends the browser to the login page and remembers where it was.
 */
import { router } from '../router';

/** An error answered by the API: `{ error: { code, message, ...details } }`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export interface ListResult<T> {
  items: T[];
  total: number;
}

type Query = Record<string, string | number | boolean | undefined | null>;

function withQuery(path: string, q?: Query): string {
  if (!q) return path;
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `${path}${path.includes('?') ? '&' : '?'}${s}` : path;
}

let redirecting = false;
let unauthorized: () => void = () => {};

/** Registers what a 401 does besides the redirect (the session module forgets the user). */
export function onUnauthorized(fn: () => void): void {
  unauthorized = fn;
}

/** Sends the user to the login page, keeping the current location to come back to. */
export function toLogin(): void {
  if (redirecting) return;
  const current = router.currentRoute.value;
  if (current.name === 'login') return;
  redirecting = true;
  void router.replace({ name: 'login', query: { next: current.fullPath } }).finally(() => {
    redirecting = false;
  });
}

/** Performs one API request and parses the JSON answer. */
export async function request<T>(
  method: string,
  path: string,
  opts: { query?: Query; body?: unknown; raw?: boolean; onHeaders?: (h: Headers) => void } = {},
): Promise<T> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: {} };
  if (opts.body !== undefined) {
    if (opts.body instanceof Blob || opts.body instanceof ArrayBuffer || opts.body instanceof Uint8Array) {
      init.body = opts.body as BodyInit;
      (init.headers as Record<string, string>)['content-type'] = 'application/octet-stream';
    } else {
      init.body = JSON.stringify(opts.body);
      (init.headers as Record<string, string>)['content-type'] = 'application/json';
    }
  }
  let res: Response;
  try {
    res = await fetch(withQuery(path, opts.query), init);
  } catch (err) {
    throw new ApiError(0, 'network', `cannot reach the server (${(err as Error).message})`);
  }
  if (res.status === 401 && path !== '/api/auth/login' && path !== '/api/auth/me') {
    // The session expired (or was revoked): back to the login page, then to where the user was.
    toLogin();
    unauthorized();
  }
  if (res.ok) opts.onHeaders?.(res.headers);
  if (opts.raw && res.ok) return (await res.text()) as T;
  const text = res.status === 204 ? '' : await res.text();
  let body: unknown = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!res.ok) {
    const e = (body as { error?: { code?: string; message?: string } } | null)?.error;
    const { code, message, ...details } = e ?? {};
    throw new ApiError(res.status, code ?? `http_${res.status}`, message ?? (res.statusText || `HTTP ${res.status}`), details);
  }
  return body as T;
}

export const api = {
  get: <T>(path: string, query?: Query) => request<T>('GET', path, { query }),
  text: (path: string, query?: Query, onHeaders?: (h: Headers) => void) => request<string>('GET', path, { query, raw: true, onHeaders }),
  post: <T>(path: string, body: unknown = {}, query?: Query) => request<T>('POST', path, { body, query }),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, { body }),
  put: <T>(path: string, body: unknown) => request<T>('PUT', path, { body }),
  delete: <T = null>(path: string) => request<T>('DELETE', path),
};

/** A user-facing message for any error. */
export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}
