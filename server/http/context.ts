import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Role } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import { roleAtLeast, type AuthService, type Principal } from '../auth/auth-service.js';
import { ApiError } from './errors.js';

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

/** Resolves the caller on every /api request (cookie session or bearer token). */
export function authenticate(auth: AuthService): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    const p = await auth.principalFromRequest(req);
    if (p) req.principal = p;
    next();
  };
}

/** Requires a signed-in caller with at least `role`. */
export function requireRole(role: Role): RequestHandler {
  return (req, _res, next) => {
    if (!req.principal) throw new ApiError('unauthorized', 'sign in first');
    if (!roleAtLeast(req.principal.role, role)) throw new ApiError('forbidden', `requires the ${role} role`);
    next();
  };
}

/** The signed-in caller (route must be behind requireRole). */
export function principal(req: Request): Principal {
  if (!req.principal) throw new ApiError('unauthorized', 'sign in first');
  return req.principal;
}

/** The audit actor of a request. */
export function actorOf(req: Request): Actor {
  return { username: req.principal?.username ?? 'anonymous', role: req.principal?.role ?? null, ip: req.ip ?? req.socket.remoteAddress ?? null };
}
