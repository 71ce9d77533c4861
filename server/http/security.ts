import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import { ApiError } from './errors.js';

/** A Host header as it may appear in a CSP source (anything else is not echoed back). */
const SAFE_HOST = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

/**
 * Content-Security-Policy of every response. No inline script and no foreign origin: the console
 * is one bundle from this server. `style-src 'unsafe-inline'` is needed because Naive UI (css-render)
 * injects its component styles as <style> elements at runtime and xterm.js sets style attributes;
 * styles cannot run code. `connect-src` names ws/wss of the same host explicitly because older
 * browsers do not let 'self' cover WebSocket schemes.
 */
export function contentSecurityPolicy(host: string | undefined, publicUrl: string | undefined): string {
  const sockets: string[] = [];
  if (publicUrl) {
    const u = new URL(publicUrl);
    sockets.push(`${u.protocol === 'https:' ? 'wss' : 'ws'}://${u.host}`);
  }
  if (host && SAFE_HOST.test(host)) sockets.push(`ws://${host}`, `wss://${host}`);
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    `connect-src 'self'${sockets.map((s) => ` ${s}`).join('')}`,
    "frame-ancestors 'none'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
  ].join('; ');
}

/** Sets the security headers on a response (API, static console, errors, the 503 while starting). */
export function setSecurityHeaders(req: IncomingMessage, res: ServerResponse, publicUrl: string | undefined): void {
  res.setHeader('Content-Security-Policy', contentSecurityPolicy(req.headers.host, publicUrl));
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Frame-Options', 'DENY');
}

/** Express middleware form of setSecurityHeaders; mounted first so every answer carries them. */
export function securityHeaders(publicUrl: string | undefined): RequestHandler {
  return (req, res, next) => {
    setSecurityHeaders(req, res, publicUrl);
    next();
  };
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** The origins a browser page of this console can have: MUSTER_PUBLIC_URL's, else the Host's. */
export function sameOrigin(origin: string, host: string | undefined, publicUrl: string | undefined): boolean {
  if (publicUrl && origin === new URL(publicUrl).origin) return true;
  return Boolean(host) && (origin === `http://${host}` || origin === `https://${host}`);
}

/**
 * Cross-site request forgery guard for state-changing requests authenticated by the session cookie
 * (browsers attach cookies on their own; a bearer token they never send unasked, so token requests
 * are exempt). Two independent checks:
 *  - the body must be JSON (or, on the routes in `rawBodyRoutes`, octet-stream): an HTML form can
 *    only send urlencoded, multipart or text/plain, and anything else from another origin needs a
 *    CORS preflight this server never grants. A POST must declare JSON even without a body.
 *  - when the browser tells where the request comes from (`Origin`, `Sec-Fetch-Site`), it must be
 *    this console's origin. SameSite=Strict alone does not stop a page on another port of the same
 *    host (same *site*). Requests with neither header are not from a browser (curl, scripts), as in
 *    Go's http.CrossOriginProtection.
 */
export function csrfGuard(opts: {
  publicUrl: string | undefined;
  rawBodyRoutes: (req: { method: string; path: string }) => boolean;
  sessionCookie: string;
}): RequestHandler {
  return (req, _res, next) => {
    if (!UNSAFE.has(req.method)) return next();
    const authz = req.headers.authorization;
    if (authz?.startsWith('Bearer ')) return next();
    if (!req.headers.cookie?.includes(`${opts.sessionCookie}=`)) return next(); // no ambient credential to abuse
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') {
      throw new ApiError('cross_site', `cross-site request refused (Sec-Fetch-Site: ${site.slice(0, 32)})`);
    }
    if (origin !== undefined && !sameOrigin(origin, req.headers.host, opts.publicUrl)) {
      throw new ApiError('cross_site', 'cross-origin request refused: Origin does not match this console');
    }
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    const ctype = req.headers['content-type'];
    // A body-less DELETE/PUT/PATCH cannot come from another origin without a preflight.
    if (ctype === undefined && !hasBody && req.method !== 'POST') return next();
    const media = (ctype ?? '').split(';')[0]!.trim().toLowerCase();
    if (media === 'application/json') return next();
    if (media === 'application/octet-stream' && opts.rawBodyRoutes(req)) return next();
    throw new ApiError('cross_site', 'state-changing requests must send Content-Type: application/json');
  };
}

/**
 * The client address of a request or upgrade under the `trust proxy` setting: the socket peer,
 * then X-Forwarded-For from right to left for as long as each hop is trusted (the algorithm of
 * proxy-addr, which express uses for `req.ip`). `trust` is express's compiled `trust proxy fn`.
 */
export function clientAddress(req: IncomingMessage, trust: (addr: string, i: number) => boolean): string | null {
  const peer = req.socket.remoteAddress ?? null;
  if (peer === null) return null;
  const xff = req.headers['x-forwarded-for'];
  const hops =
    typeof xff === 'string'
      ? xff
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean)
          .reverse()
      : [];
  const chain = [peer, ...hops];
  for (let i = 0; i < chain.length - 1; i++) if (!trust(chain[i]!, i)) return chain[i]!;
  return chain[chain.length - 1]!;
}
