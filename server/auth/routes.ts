import { z } from 'zod';
import {
  ApiToken,
  ApiTokenCreated,
  AuditEntry,
  LoginResult,
  Me,
  pageOf,
  PASSWORD_MAX_LENGTH,
  PASSWORD_MIN_LENGTH,
  PASSWORD_RULE,
  PasswordRules,
  User,
  UserView,
} from '../../protocol/index.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf, principal } from '../http/context.js';
import { ApiError } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import type { Db } from '../db/db.js';
import type { AuditLog } from './audit.js';
import { nameAuditRows, targetIdsNamed } from './audit-names.js';
import { canonicalUsername, isUniqueViolation, ROLES, roleAtLeast, SESSION_COOKIE, type AuthService } from './auth-service.js';

/** Usernames are compared in one canonical form (trimmed, lower-case): see canonicalUsername. */
const Username = z.string().max(128).transform(canonicalUsername).pipe(z.string().min(1).max(64));
const Login = z.object({ username: Username, password: z.string().min(1).max(1024) });
const Role = z.enum(ROLES as [string, ...string[]]).transform((r) => r as 'viewer' | 'operator' | 'admin');
/** Longest token lifetime accepted (ten years): beyond that, leave the expiry out. */
const MAX_TOKEN_TTL_SEC = 10 * 365 * 86_400;
const TokenBody = z
  .object({
    name: z.string().min(1).max(128),
    /** Rights of the token: at most the owner's role (default: the owner's role, whatever it is then). */
    scope: Role.optional(),
    expiresInSec: z.number().int().min(1).max(MAX_TOKEN_TTL_SEC).optional(),
    expiresAt: z.iso.datetime({ offset: true }).optional(),
  })
  .refine((b) => !(b.expiresInSec !== undefined && b.expiresAt !== undefined), { message: 'give expiresInSec or expiresAt, not both' });
/** The password rule (protocol/dashboard.ts): the console shows the same constants before submit. */
const Password = z.string().min(PASSWORD_MIN_LENGTH, `the password must be ${PASSWORD_RULE}`).max(PASSWORD_MAX_LENGTH, `the password must be ${PASSWORD_RULE}`);
const NewUser = z.object({ username: Username.pipe(z.string().regex(/^[a-z0-9_.@-]+$/, 'letters, digits and _ . @ - only')), password: Password, role: Role });
const PatchUser = z
  .object({ role: Role.optional(), password: Password.optional(), disabled: z.boolean().optional() })
  .strict()
  .refine((p) => p.role !== undefined || p.password !== undefined || p.disabled !== undefined, 'give at least one of role, password, disabled');

const AuditQuery = {
  ...pageShape(),
  action: one().max(128).optional().describe('exact, or a prefix ending in `*` (`terminal.*`)'),
  actor: one().max(128).optional().describe("a username (an agent's name finds its `agent:<id>` records too)"),
  targetId: one().max(256).optional(),
  target: one()
    .max(256)
    .optional()
    .describe('a target id, or the exact name of an agent, user, script, schedule, managed file, enrollment token or notification rule'),
  targetType: one().max(32).optional(),
  ok: oneOf(['true', 'false']).optional().describe('`false`: refused actions only'),
  since: one().optional().describe('ISO time or epoch ms'),
  until: one().optional().describe('ISO time or epoch ms'),
};
const auditTime = (v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  return Number.isNaN(n) ? undefined : n;
};

/**
 * Sliding one-minute window of login attempts per canonical username+address. An attempt is
 * reserved before the password check, synchronously (no await between the test and the record),
 * so concurrent requests cannot all pass the check before any failure is counted; a successful
 * login gives its reservation back.
 */
class LoginLimiter {
  private readonly attempts = new Map<string, number[]>();
  constructor(
    private readonly perMinute: number,
    /** MUSTER_LOGIN_RATE_MAX_KEYS. */
    private readonly maxKeys: number,
  ) {}
  /** Reserves an attempt; null when the window is full (answer 429 without checking). */
  reserve(key: string): number | null {
    const now = Date.now();
    const list = (this.attempts.get(key) ?? []).filter((t) => now - t < 60_000);
    if (list.length >= this.perMinute) {
      this.attempts.set(key, list);
      return null;
    }
    list.push(now);
    this.attempts.delete(key); // re-insert: the Map stays ordered by last use for the eviction below
    this.attempts.set(key, list);
    if (this.attempts.size > this.maxKeys) this.attempts.delete(this.attempts.keys().next().value as string);
    return now;
  }
  /** A successful login does not count against the limit. */
  release(key: string, at: number): void {
    const list = this.attempts.get(key);
    const i = list?.indexOf(at) ?? -1;
    if (list && i >= 0) list.splice(i, 1);
    if (list?.length === 0) this.attempts.delete(key);
  }
}

/** /api/auth, /api/tokens, /api/users, /api/audit. */
export function authRoutes(deps: {
  auth: AuthService;
  audit: AuditLog;
  secureCookies: boolean;
  sessionTtlSec: number;
  loginRateLimit: number;
  loginRateMaxKeys: number;
  maxTokensPerUser: number;
  /** The fleet, for agent names in the audit log (in memory). */
  agents: { get(id: string): { name: string } | undefined; all(): Iterable<{ id: string; name: string; hostname: string }> };
  db: Db;
}): ApiRouter {
  const { auth, audit } = deps;
  const r = new ApiRouter();
  const limiter = new LoginLimiter(deps.loginRateLimit, deps.loginRateMaxKeys);

  r.post(
    '/auth/login',
    {
      summary: 'Sign in',
      description: 'Sets the session cookie (HttpOnly, SameSite=Strict). Failed logins are limited per username and address (429 `rate_limited`).',
      role: null,
      body: Login,
      responses: { 200: LoginResult },
    },
    async (req, res) => {
      const body = Login.parse(req.body);
      const actor = { username: body.username, role: null, ip: req.ip ?? null };
      const key = `${body.username}\u0000${actor.ip}`;
      const reserved = limiter.reserve(key);
      if (reserved === null) {
        await audit.record({ actor, action: 'auth.login', ok: false, details: { reason: 'rate limited' } });
        throw new ApiError('rate_limited', 'too many failed logins; wait a minute');
      }
      const user = await auth.checkPassword(body.username, body.password);
      if (!user) {
        await audit.record({ actor, action: 'auth.login', ok: false, details: { reason: 'bad credentials' } });
        throw new ApiError('unauthorized', 'wrong username or password');
      }
      limiter.release(key, reserved);
      const s = await auth.createSession(user.id, actor.ip, req.get('user-agent') ?? null);
      await audit.record({ actor: { ...actor, role: user.role }, action: 'auth.login', ok: true });
      res.cookie(SESSION_COOKIE, s.token, { httpOnly: true, sameSite: 'strict', secure: deps.secureCookies, path: '/', maxAge: deps.sessionTtlSec * 1000 });
      res.json({ user });
    },
  );

  r.post(
    '/auth/logout',
    { summary: 'Sign out', description: 'Ends the session and clears its cookie.', role: null, responses: { 204: null } },
    async (req, res) => {
      const p = req.principal;
      if (p?.sessionId) {
        await auth.deleteSession(p.sessionId);
        await audit.record({ actor: actorOf(req), action: 'auth.logout' });
      }
      res.clearCookie(SESSION_COOKIE, { path: '/' });
      res.status(204).end();
    },
  );

  r.get('/auth/me', { summary: 'The caller', role: 'viewer', responses: { 200: Me } }, (req, res) => {
    const p = principal(req);
    res.json({ user: { id: p.id, username: p.username, role: p.role }, via: p.via });
  });

  r.post(
    '/tokens',
    {
      summary: 'Create an API token',
      description: "The token is in the answer once. Its scope is at most the caller's role; 409 `limit_exceeded` past MUSTER_MAX_TOKENS_PER_USER live tokens.",
      role: 'viewer',
      body: TokenBody,
      responses: { 201: ApiTokenCreated },
    },
    async (req, res) => {
      const { name, scope, expiresInSec, expiresAt: at } = TokenBody.parse(req.body);
      const p = principal(req);
      // A token can do no more than the caller can now (a token cannot mint a wider one either).
      if (scope && !roleAtLeast(p.role, scope)) throw new ApiError('forbidden', `scope ${scope} is above your role (${p.role})`);
      const expiresAt = expiresInSec !== undefined ? Date.now() + expiresInSec * 1000 : at !== undefined ? Date.parse(at) : null;
      if (expiresAt !== null && expiresAt <= Date.now()) throw new ApiError('bad_request', 'expiresAt is in the past');
      const t = await auth.createToken(p.id, name, { scope: scope ?? (p.via === 'token' ? p.role : null), expiresAt });
      if ('error' in t)
        throw new ApiError('limit_exceeded', `you have ${deps.maxTokensPerUser} live tokens (MUSTER_MAX_TOKENS_PER_USER); revoke one first`, 409);
      const view = { scope: scope ?? null, expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString() };
      await audit.record({
        actor: actorOf(req),
        action: 'token.create',
        targetType: 'token',
        targetId: String(t.id),
        details: { name, prefix: t.prefix, ...view },
      });
      res.status(201).json({ id: t.id, name, token: t.token, prefix: t.prefix, ...view });
    },
  );
  r.get(
    '/tokens',
    {
      summary: 'List API tokens',
      description: "The caller's own tokens; an admin sees everyone's.",
      role: 'viewer',
      responses: { 200: pageOf(ApiToken, 'ApiTokenList') },
    },
    async (req, res) => {
      const p = principal(req);
      const items = await auth.listTokens(p.role === 'admin' ? undefined : p.id);
      res.json({ items, total: items.length });
    },
  );
  r.delete(
    '/tokens/:id',
    { summary: 'Revoke an API token', description: "One's own, or any as an admin.", role: 'viewer', responses: { 204: null } },
    async (req, res) => {
      const p = principal(req);
      const ok = await auth.revokeToken(Number(req.params['id']), p.role === 'admin' ? undefined : p.id);
      if (!ok) throw new ApiError('not_found', 'token not found');
      await audit.record({ actor: actorOf(req), action: 'token.revoke', targetType: 'token', targetId: String(req.params['id']) });
      res.status(204).end();
    },
  );

  r.get('/users', { summary: 'List users', role: 'admin', responses: { 200: pageOf(User, 'UserList') } }, async (_req, res) => {
    const items = await auth.listUsers();
    res.json({ items, total: items.length });
  });
  r.post('/users', { summary: 'Create a user', role: 'admin', body: NewUser, responses: { 201: UserView } }, async (req, res) => {
    const body = NewUser.parse(req.body);
    if (await auth.userExists(body.username)) throw new ApiError('conflict', 'username taken');
    const u = await auth.createUser(body.username, body.password, body.role).catch((err: unknown) => {
      // Two creations racing past the check: the unique index decides, still a 409.
      if (isUniqueViolation(err)) throw new ApiError('conflict', 'username taken');
      throw err;
    });
    await audit.record({
      actor: actorOf(req),
      action: 'user.create',
      targetType: 'user',
      targetId: String(u.id),
      details: { username: u.username, role: u.role },
    });
    res.status(201).json(u);
  });
  r.patch(
    '/users/:id',
    {
      summary: 'Change a user',
      description: "Role, password or disabled; a new password or disabling ends the user's sessions.",
      role: 'admin',
      body: PatchUser,
      responses: { 200: User },
    },
    async (req, res) => {
      const body = PatchUser.parse(req.body);
      const id = Number(req.params['id']);
      if (!Number.isSafeInteger(id) || id < 1) throw new ApiError('not_found', 'user not found');
      if (!(await auth.updateUser(id, body))) throw new ApiError('not_found', 'user not found');
      await audit.record({
        actor: actorOf(req),
        action: 'user.update',
        targetType: 'user',
        targetId: String(id),
        details: { role: body.role, disabled: body.disabled, passwordChanged: Boolean(body.password) },
      });
      res.json((await auth.listUsers()).find((u) => u.id === id));
    },
  );

  r.get(
    '/auth/password-rules',
    {
      summary: 'The password rule',
      description: 'What POST/PATCH /api/users accept, for showing before submit.',
      role: 'viewer',
      responses: { 200: PasswordRules },
    },
    (_req, res) => {
      res.json({ minLength: PASSWORD_MIN_LENGTH, maxLength: PASSWORD_MAX_LENGTH, rule: PASSWORD_RULE });
    },
  );

  r.get(
    '/audit',
    {
      summary: 'Audit log',
      description:
        'Who did what, when, from where; newest first. Each entry names its actor and target (`actorName`, `targetName`) besides their ids; filters by actor, action (prefix with `*`), target (id or name), result and time.',
      role: 'admin',
      query: AuditQuery,
      responses: { 200: pageOf(AuditEntry, 'AuditList') },
    },
    async (req, res) => {
      const q = parseQuery(req, AuditQuery);
      const agentName = (id: string) => deps.agents.get(id)?.name;
      let actors: string[] | undefined;
      if (q.actor) {
        // An agent's name also finds what it did as `agent:<id>` (host policy reports).
        actors = [q.actor];
        for (const a of deps.agents.all()) if (a.name === q.actor && actors.length < 100) actors.push(`agent:${a.id}`);
      }
      const targetIds = q.target ? await targetIdsNamed(deps.db, deps.agents.all(), q.target.trim()) : undefined;
      const page = await audit.list({
        limit: q.limit,
        offset: q.offset,
        action: q.action,
        actors,
        targetId: q.targetId,
        targetIds,
        targetType: q.targetType,
        ok: q.ok === undefined ? undefined : q.ok === 'true',
        since: auditTime(q.since),
        until: auditTime(q.until),
      });
      res.json({ items: await nameAuditRows(deps.db, agentName, page.items), total: page.total });
    },
  );
  return r;
}
