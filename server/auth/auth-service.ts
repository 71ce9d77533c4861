import type { IncomingMessage } from 'node:http';
import type { Role, UserView } from '../../protocol/index.js';
import type { AuthEvent, Bus } from '../bus/bus.js';
import { randomSecret } from '../config/config.js';
import type { Db } from '../db/db.js';
import { hashPassword, sha256, verifyPassword } from './crypto.js';

export const SESSION_COOKIE = 'muster_session';
const ROLE_RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
export const ROLES: readonly Role[] = ['viewer', 'operator', 'admin'];

/** True when `role` carries at least the rights of `needed`. */
export function roleAtLeast(role: Role, needed: Role): boolean {
  return ROLE_RANK[role] >= ROLE_RANK[needed];
}

/**
 * The one form a username is stored, looked up, rate-limited and audited in: trimmed and
 * lower-case. MariaDB's collation compares `Admin ` equal to `admin`; SQLite does not: without
 * one canonical form the two databases disagree and a limiter keyed on the raw name is bypassed.
 */
export function canonicalUsername(u: string): string {
  return u.trim().toLowerCase();
}

/** True for a unique-constraint violation on MySQL/MariaDB or SQLite. */
export function isUniqueViolation(err: unknown): boolean {
  const code = String((err as { code?: unknown } | null)?.code ?? '');
  return code === 'ER_DUP_ENTRY' || code.startsWith('SQLITE_CONSTRAINT_UNIQUE') || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/** The lower of two roles. */
export function minRole(a: Role, b: Role): Role {
  return ROLE_RANK[a] <= ROLE_RANK[b] ? a : b;
}

/**
 * A signed-in caller. `role` is the effective role: the user's, or for a token the lower of the
 * token's scope and its owner's current role.
 */
export interface Principal extends UserView {
  via: 'session' | 'token';
  sessionId?: string;
  tokenId?: number;
  /** When the session or token ends (ms since the epoch); null: never (a token without expiry). */
  expiresAt: number | null;
  /** When the credential was read from the database (ms): auth events after it make it stale. */
  resolvedAt: number;
}

/** Auth events are remembered this long for sockets whose upgrade raced them (see isStale). */
const CHANGE_MEMORY_MS = 10 * 60_000;

/** Users, password login, cookie sessions and API tokens. */
export class AuthService {
  /**
   * Last auth event per credential (`u:<userId>`, `s:<sessionId>`, `t:<tokenId>`): the cache a live
   * socket checks on every message (a few Map lookups, no database query per keystroke).
   */
  private readonly changes = new Map<string, number>();
  /** Per-user queue of token creations (the cap check and the insert run as one). */
  private readonly tokenLocks = new Map<number, Promise<unknown>>();

  constructor(
    private readonly db: Db,
    private readonly sessionTtlSec: number,
    private readonly bus?: Bus,
    private readonly opts: { maxTokensPerUser: number } = { maxTokensPerUser: 50 },
  ) {
    bus?.subscribe('auth.changed', (ev) => this.remember(ev));
  }

  /** Records an auth event locally (also for events from other nodes). */
  private remember(ev: AuthEvent): void {
    const now = Date.now();
    const key = ev.kind === 'session.ended' ? `s:${ev.sessionId}` : ev.kind === 'token.ended' ? `t:${ev.tokenId}` : `u:${ev.userId}`;
    this.changes.delete(key);
    this.changes.set(key, now);
    // Oldest first (insertion order): forget what no upgrade in flight can still race.
    for (const [k, at] of this.changes) {
      if (now - at < CHANGE_MEMORY_MS && this.changes.size <= 100_000) break;
      this.changes.delete(k);
    }
  }

  /** Publishes an auth event: live sockets of that session, token or user are closed. */
  private changed(ev: AuthEvent): void {
    if (this.bus) this.bus.publish('auth.changed', ev);
    else this.remember(ev);
  }

  /**
   * True when the principal's session, token or user changed after it was read (logout, revoke,
   * role change, disable, password reset) or its session/token expired: it must not act any more.
   */
  isStale(p: Principal, now = Date.now()): boolean {
    if (p.expiresAt !== null && now >= p.expiresAt) return true;
    const at = (k: string) => this.changes.get(k) ?? -1;
    if (at(`u:${p.id}`) >= p.resolvedAt) return true;
    if (p.sessionId && at(`s:${p.sessionId}`) >= p.resolvedAt) return true;
    return p.tokenId !== undefined && at(`t:${p.tokenId}`) >= p.resolvedAt;
  }

  /** Creates `admin` when no user exists. Returns the generated password when one was made up. */
  async ensureAdmin(password: string | undefined): Promise<{ created: boolean; password?: string }> {
    const [{ n }] = (await this.db('users').count({ n: '*' })) as [{ n: number | string }];
    if (Number(n) > 0) return { created: false };
    const pw = password ?? randomSecret(12);
    await this.createUser('admin', pw, 'admin');
    return { created: true, password: password ? undefined : pw };
  }

  /** Whether a user with this name exists, in any case (legacy rows may not be canonical). */
  async userExists(username: string): Promise<boolean> {
    return Boolean(
      await this.db('users')
        .whereRaw('lower(username) = ?', [canonicalUsername(username)])
        .first('id'),
    );
  }

  /** A user's current role and state by name; null when no such user. */
  async userRights(username: string): Promise<{ role: Role; disabled: boolean } | null> {
    const row = await this.db('users')
      .whereRaw('lower(username) = ?', [canonicalUsername(username)])
      .first('role', 'disabled');
    return row ? { role: row.role as Role, disabled: Boolean(row.disabled) } : null;
  }

  async createUser(name: string, password: string, role: Role): Promise<UserView> {
    const username = canonicalUsername(name);
    const [id] = await this.db('users').insert({ username, password_hash: await hashPassword(password), role, created_at: Date.now(), disabled: false });
    const row = await this.db('users').where({ username }).first();
    return { id: Number(row?.id ?? id), username, role };
  }

  async listUsers(): Promise<(UserView & { disabled: boolean; createdAt: string })[]> {
    const rows = await this.db('users').orderBy('id');
    return rows.map((r) => ({
      id: Number(r.id),
      username: r.username,
      role: r.role,
      disabled: Boolean(r.disabled),
      createdAt: new Date(Number(r.created_at)).toISOString(),
    }));
  }

  async updateUser(id: number, patch: { role?: Role; password?: string; disabled?: boolean }): Promise<boolean> {
    const upd: Record<string, unknown> = {};
    if (patch.role) upd['role'] = patch.role;
    if (patch.password) upd['password_hash'] = await hashPassword(patch.password);
    if (patch.disabled !== undefined) upd['disabled'] = patch.disabled;
    const before = patch.role ? await this.db('users').where({ id }).first('role') : undefined;
    const n = await this.db('users').where({ id }).update(upd);
    if (patch.disabled || patch.password) await this.db('sessions').where({ user_id: id }).delete();
    const demoted = Boolean(patch.role && before && !roleAtLeast(patch.role, before.role as Role));
    if (n > 0) this.changed({ kind: 'user.changed', userId: id, rightsReduced: Boolean(patch.disabled || patch.password) || demoted });
    return n > 0;
  }

  /** Checks a password; null when the user is unknown, disabled or the password is wrong. */
  async checkPassword(username: string, password: string): Promise<UserView | null> {
    const row = await this.db('users')
      .whereRaw('lower(username) = ?', [canonicalUsername(username)])
      .first();
    if (!row) {
      await hashPassword(password); // same work as a real check: no user enumeration by timing
      return null;
    }
    if (row.disabled || !(await verifyPassword(password, row.password_hash))) return null;
    return { id: Number(row.id), username: row.username, role: row.role };
  }

  /** Opens a session; returns the cookie value (only its hash is stored). */
  async createSession(userId: number, ip: string | null, userAgent: string | null): Promise<{ token: string; expiresAt: number }> {
    const token = randomSecret(32);
    const now = Date.now();
    const expiresAt = now + this.sessionTtlSec * 1000;
    await this.db('sessions').insert({
      id: sha256(token),
      user_id: userId,
      created_at: now,
      expires_at: expiresAt,
      ip,
      user_agent: userAgent?.slice(0, 255) ?? null,
    });
    return { token, expiresAt };
  }

  async deleteSession(sessionId: string): Promise<void> {
    await this.db('sessions').where({ id: sessionId }).delete();
    this.changed({ kind: 'session.ended', sessionId });
  }

  async principalFromSession(token: string): Promise<Principal | null> {
    const id = sha256(token);
    const resolvedAt = Date.now();
    const row = await this.db('sessions')
      .join('users', 'users.id', 'sessions.user_id')
      .where('sessions.id', id)
      .select('users.id as uid', 'users.username', 'users.role', 'users.disabled', 'sessions.expires_at')
      .first();
    if (!row || row.disabled || Number(row.expires_at) <= Date.now()) return null;
    return { id: Number(row.uid), username: row.username, role: row.role, via: 'session', sessionId: id, expiresAt: Number(row.expires_at), resolvedAt };
  }

  /**
   * Creates an API token for a user; the token is returned once and stored hashed. `scope` caps
   * its rights (never above the owner's role, checked by the caller); `expiresAt` ends it.
   */
  async createToken(
    userId: number,
    name: string,
    opts: { scope?: Role | null; expiresAt?: number | null } = {},
  ): Promise<{ id: number; token: string; prefix: string } | { error: 'cap' }> {
    // One creation per user at a time: concurrent requests cannot all pass the cap check.
    const prev = this.tokenLocks.get(userId) ?? Promise.resolve();
    const run = prev.then(() => this.createTokenNow(userId, name, opts));
    const tail = run.catch(() => {});
    this.tokenLocks.set(userId, tail);
    void tail.then(() => {
      if (this.tokenLocks.get(userId) === tail) this.tokenLocks.delete(userId);
    });
    return run;
  }

  private async createTokenNow(
    userId: number,
    name: string,
    opts: { scope?: Role | null; expiresAt?: number | null },
  ): Promise<{ id: number; token: string; prefix: string } | { error: 'cap' }> {
    const now = Date.now();
    const live = (await this.db('api_tokens')
      .where({ user_id: userId })
      .whereNull('revoked_at')
      .andWhere((q) => void q.whereNull('expires_at').orWhere('expires_at', '>', now))
      .count({ n: '*' })) as [{ n: number | string }];
    if (Number(live[0].n) >= this.opts.maxTokensPerUser) return { error: 'cap' };
    const token = `mst_${randomSecret(32)}`;
    const prefix = token.slice(0, 10);
    await this.db('api_tokens').insert({
      user_id: userId,
      name,
      token_hash: sha256(token),
      prefix,
      created_at: now,
      scope: opts.scope ?? null,
      expires_at: opts.expiresAt ?? null,
    });
    const row = await this.db('api_tokens')
      .where({ token_hash: sha256(token) })
      .first();
    return { id: Number(row?.id), token, prefix };
  }

  async listTokens(userId?: number) {
    const q = this.db('api_tokens').join('users', 'users.id', 'api_tokens.user_id').select('api_tokens.*', 'users.username').orderBy('api_tokens.id', 'desc');
    if (userId !== undefined) q.where('api_tokens.user_id', userId);
    const rows = await q;
    const now = Date.now();
    const iso = (v: unknown) => (v == null ? null : new Date(Number(v)).toISOString());
    return rows.map((r) => ({
      id: Number(r.id),
      name: r.name,
      prefix: r.prefix,
      username: r.username,
      createdAt: new Date(Number(r.created_at)).toISOString(),
      lastUsedAt: iso(r.last_used_at),
      scope: (r.scope as Role | null) ?? null,
      expiresAt: iso(r.expires_at),
      expired: r.expires_at != null && Number(r.expires_at) <= now,
      revoked: r.revoked_at != null,
    }));
  }

  async revokeToken(id: number, userId?: number): Promise<boolean> {
    const q = this.db('api_tokens').where({ id }).whereNull('revoked_at');
    if (userId !== undefined) q.where({ user_id: userId });
    const ok = (await q.update({ revoked_at: Date.now() })) > 0;
    if (ok) this.changed({ kind: 'token.ended', tokenId: id });
    return ok;
  }

  async principalFromToken(token: string): Promise<Principal | null> {
    const resolvedAt = Date.now();
    const row = await this.db('api_tokens')
      .join('users', 'users.id', 'api_tokens.user_id')
      .where('api_tokens.token_hash', sha256(token))
      .whereNull('api_tokens.revoked_at')
      .select('users.id as uid', 'users.username', 'users.role', 'users.disabled', 'api_tokens.id as tid', 'api_tokens.scope', 'api_tokens.expires_at')
      .first();
    if (!row || row.disabled) return null;
    const expiresAt = row.expires_at == null ? null : Number(row.expires_at);
    if (expiresAt !== null && expiresAt <= Date.now()) return null;
    void this.db('api_tokens')
      .where({ id: row.tid })
      .update({ last_used_at: Date.now() })
      .catch(() => {});
    const role: Role = row.scope ? minRole(row.scope as Role, row.role as Role) : row.role;
    return { id: Number(row.uid), username: row.username, role, via: 'token', tokenId: Number(row.tid), expiresAt, resolvedAt };
  }

  /**
   * Re-reads the principal's credential from the database (one query): false when its session or
   * token is gone, revoked or expired, or its user is disabled or now has a different role. For
   * changes that reached this process as no event (isStale covers those that did).
   */
  async stillValid(p: Principal): Promise<boolean> {
    const now = Date.now();
    if (p.expiresAt !== null && now >= p.expiresAt) return false;
    if (p.via === 'session' && p.sessionId) {
      const row = await this.db('sessions')
        .join('users', 'users.id', 'sessions.user_id')
        .where('sessions.id', p.sessionId)
        .first('users.id as uid', 'users.role', 'users.disabled', 'sessions.expires_at');
      return Boolean(row) && !row.disabled && Number(row.uid) === p.id && row.role === p.role && Number(row.expires_at) > now;
    }
    if (p.via === 'token' && p.tokenId !== undefined) {
      const row = await this.db('api_tokens')
        .join('users', 'users.id', 'api_tokens.user_id')
        .where('api_tokens.id', p.tokenId)
        .whereNull('api_tokens.revoked_at')
        .first('users.id as uid', 'users.role', 'users.disabled', 'api_tokens.scope', 'api_tokens.expires_at');
      if (!row || row.disabled || Number(row.uid) !== p.id) return false;
      if (row.expires_at != null && Number(row.expires_at) <= now) return false;
      return (row.scope ? minRole(row.scope as Role, row.role as Role) : row.role) === p.role;
    }
    return false;
  }

  /** Resolves the caller of an HTTP request or WebSocket upgrade from its cookie or bearer token. */
  async principalFromRequest(req: IncomingMessage): Promise<Principal | null> {
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ')) return this.principalFromToken(auth.slice(7).trim());
    const cookie = parseCookies(req.headers.cookie)[SESSION_COOKIE];
    return cookie ? this.principalFromSession(cookie) : null;
  }
}

/** Minimal cookie header parser (name=value pairs). */
export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    try {
      out[k] = decodeURIComponent(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}
