import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { z } from 'zod';
import type { Role } from '../../protocol/index.js';
import { requireRole } from './context.js';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';

/** A body or answer that is not JSON (an upload, a stream, a file). */
export interface Media {
  media: string;
  description: string;
}

/**
 * What a route takes and answers, declared with the route itself: the router applies the role
 * from it, and GET /api/openapi.json is generated from it (server/http/openapi.ts). The schemas are
 * the ones the handler parses with, so the description cannot drift from the validation.
 */
export interface Operation {
  summary: string;
  description?: string;
  /** Least role required (checked here, before the handler); null: no sign-in needed. */
  role: Role | null;
  /** Other credentials the route accepts (for the document; the handler checks them). */
  auth?: string;
  /** Path parameters (each a string unless given). */
  params?: Record<string, z.ZodType>;
  /** Query parameters: the shape the handler passes to parseQuery. */
  query?: z.ZodRawShape;
  body?: z.ZodType | Media;
  /** Status → JSON schema, non-JSON media, or null for no body (204). Errors are documented for every route. */
  responses: Record<number, z.ZodType | Media | null>;
  /**
   * Only requests for which this holds take this route; others go on to the next route of the
   * same path (POST /api/tasks: a library-script run, else an ad-hoc script).
   */
  when?: (req: Request) => boolean;
}

export interface RegisteredRoute {
  method: Method;
  path: string;
  op: Operation;
}

export type Handler = (req: Request, res: Response) => void | Promise<void>;

/** An Express router whose routes carry their Operation: declaring a route documents it. */
export class ApiRouter {
  readonly router = Router();
  readonly routes: RegisteredRoute[] = [];

  get(path: string, op: Operation, handler: Handler): this {
    return this.add('get', path, op, handler);
  }
  post(path: string, op: Operation, handler: Handler): this {
    return this.add('post', path, op, handler);
  }
  put(path: string, op: Operation, handler: Handler): this {
    return this.add('put', path, op, handler);
  }
  patch(path: string, op: Operation, handler: Handler): this {
    return this.add('patch', path, op, handler);
  }
  delete(path: string, op: Operation, handler: Handler): this {
    return this.add('delete', path, op, handler);
  }

  private add(method: Method, path: string, op: Operation, handler: Handler): this {
    const chain: RequestHandler[] = [];
    const when = op.when;
    if (when) chain.push((req, _res, next) => (when(req) ? next() : next('route')));
    if (op.role) chain.push(requireRole(op.role));
    chain.push(handler as RequestHandler);
    this.router[method](path, ...chain);
    this.routes.push({ method, path, op });
    return this;
  }
}
