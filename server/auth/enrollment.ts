import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { Labels } from '../../protocol/index.js';
import { randomSecret } from '../config/config.js';
import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';
import { safeEqual, sha256 } from './crypto.js';

/** An enrollment token as the API shows it (never the token itself, which is shown once at creation). */
export interface EnrollmentTokenView {
  id: string;
  name: string;
  prefix: string;
  labels: Labels;
  maxUses: number | null;
  uses: number;
  expiresAt: string;
  createdBy: string;
  createdAt: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
  internal: boolean;
  /** `active` until it is revoked, expired or used up. */
  state: 'active' | 'revoked' | 'expired' | 'used';
}

/** What a valid enrollment token grants: the token (null for MUSTER_ENROLL_TOKEN) and the labels it applies. */
export interface EnrollmentGrant {
  tokenId: string | null;
  labels: Labels | null;
}

const iso = (t: number | null) => (t == null ? null : new Date(t).toISOString());
const PREFIX = 'mst_enr_';

function view(r: Record<string, unknown>, now = Date.now()): EnrollmentTokenView {
  const maxUses = r['max_uses'] == null ? null : Number(r['max_uses']);
  const uses = Number(r['uses']);
  const expiresAt = Number(r['expires_at']);
  const revokedAt = r['revoked_at'] == null ? null : Number(r['revoked_at']);
  const state = revokedAt != null ? 'revoked' : expiresAt <= now ? 'expired' : maxUses != null && uses >= maxUses ? 'used' : 'active';
  return {
    id: String(r['id']),
    name: String(r['name']),
    prefix: String(r['prefix']),
    labels: parseJson(r['labels'], {}),
    maxUses,
    uses,
    expiresAt: iso(expiresAt)!,
    createdBy: String(r['created_by']),
    createdAt: iso(Number(r['created_at']))!,
    revokedAt: iso(revokedAt),
    lastUsedAt: iso(r['last_used_at'] == null ? null : Number(r['last_used_at'])),
    internal: Boolean(r['internal']),
    state,
  };
}

/**
 * Enrollment tokens (like Teleport's join tokens): created with a TTL, a maximum number of uses and
 * labels; stored as a sha256 hash (they are high-entropy secrets), shown once. A use is consumed
 * in the same transaction that claims the new agent's id. The single MUSTER_ENROLL_TOKEN, when set
 * explicitly, keeps working beside them.
 */
export class EnrollmentTokens {
  /** MUSTER_ENROLL_TOKEN when set (else agents enroll only with tokens created here). */
  readonly staticToken: string | null;

  constructor(
    private readonly db: Db,
    private readonly o: {
      staticToken: string | undefined;
      /** Base URL of this server (the install script and the package download are there). */
      serverUrl(): string;
      /** MUSTER_UPDATE_PUBLIC_KEY: put in the install command so the installer checks the package. */
      updatePublicKey: string | undefined;
    },
  ) {
    this.staticToken = o.staticToken ?? null;
  }

  /** ws(s):// URL agents connect to. */
  agentUrl(): string {
    return this.o.serverUrl().replace(/^http/, 'ws');
  }

  /** The one-line install command for `token` (MUSTER_ENROLL_TOKEN, else a placeholder). */
  installCommand(token = this.staticToken ?? '<ENROLLMENT-TOKEN>'): string {
    const base = this.o.serverUrl();
    const key = this.o.updatePublicKey ? ` --public-key-b64 ${this.o.updatePublicKey}` : '';
    return `curl -fsSL ${base}/install-agent.sh | sudo bash -s -- --server ${this.agentUrl()} --token ${token} --url ${base}/api/artifacts/latest/download${key}`;
  }

  /**
   * The local agent's own single-use, short-lived token, minted only while it has not enrolled
   * yet: `npm start` needs no setup, and no long-lived shared token exists for it.
   */
  async mintLocal(): Promise<string> {
    return (await this.create({ name: 'local agent', ttlSec: 600, maxUses: 1, labels: {}, createdBy: 'system', internal: true })).token;
  }

  /** Creates a token; the secret is in the answer only. */
  async create(o: {
    name: string;
    ttlSec: number;
    maxUses: number | null;
    labels: Labels;
    createdBy: string;
    internal?: boolean;
  }): Promise<{ view: EnrollmentTokenView; token: string }> {
    const token = `${PREFIX}${randomSecret(24)}`;
    const now = Date.now();
    const row = {
      id: randomUUID(),
      name: o.name,
      token_hash: sha256(token),
      prefix: token.slice(0, PREFIX.length + 4),
      labels: JSON.stringify(o.labels),
      max_uses: o.maxUses,
      uses: 0,
      expires_at: now + o.ttlSec * 1000,
      created_by: o.createdBy,
      created_at: now,
      revoked_at: null,
      last_used_at: null,
      internal: Boolean(o.internal),
    };
    await this.db('enrollment_tokens').insert(row);
    return { view: view(row, now), token };
  }

  async list(limit: number, offset: number): Promise<{ items: EnrollmentTokenView[]; total: number }> {
    const [{ n }] = (await this.db('enrollment_tokens').count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db('enrollment_tokens').orderBy('created_at', 'desc').orderBy('id').limit(limit).offset(offset);
    const now = Date.now();
    return { items: rows.map((r: Record<string, unknown>) => view(r, now)), total: Number(n) };
  }

  async get(id: string): Promise<EnrollmentTokenView | null> {
    const r = await this.db('enrollment_tokens').where({ id }).first();
    return r ? view(r) : null;
  }

  /** Revokes a token (idempotent); false when there is no such token. */
  async revoke(id: string): Promise<boolean> {
    const n = await this.db('enrollment_tokens').where({ id }).whereNull('revoked_at').update({ revoked_at: Date.now() });
    return n > 0 || Boolean(await this.db('enrollment_tokens').where({ id }).first());
  }

  /** Whether `token` may enroll an agent now (nothing is consumed: that happens at hello). */
  async check(token: string): Promise<EnrollmentGrant | null> {
    if (this.staticToken !== null && safeEqual(token, this.staticToken)) return { tokenId: null, labels: null };
    if (!token.startsWith(PREFIX) || token.length > 128) return null;
    const r = await this.db('enrollment_tokens')
      .where({ token_hash: sha256(token) })
      .first();
    if (!r) return null;
    const v = view(r);
    return v.state === 'active' ? { tokenId: v.id, labels: Object.keys(v.labels).length ? v.labels : null } : null;
  }

  /**
   * Consumes one use of `tokenId` inside `trx`: a single conditional update, so concurrent
   * enrollments can never exceed max_uses, and a token revoked or expired since the upgrade fails.
   */
  consume(tokenId: string): (trx: Knex.Transaction) => Promise<boolean> {
    return async (trx) => {
      const now = Date.now();
      const n = await trx('enrollment_tokens')
        .where({ id: tokenId })
        .whereNull('revoked_at')
        .where('expires_at', '>', now)
        .where((q) => void q.whereNull('max_uses').orWhere('uses', '<', trx.ref('max_uses')))
        .update({ uses: trx.raw('uses + 1'), last_used_at: now });
      return n === 1;
    };
  }

  /** Gives back one use of `tokenId` inside `trx` (an enrollment that never completed; see Fleet.abandonEnrollment). */
  release(tokenId: string): (trx: Knex.Transaction) => Promise<void> {
    return async (trx) => {
      await trx('enrollment_tokens')
        .where({ id: tokenId })
        .where('uses', '>', 0)
        .update({ uses: trx.raw('uses - 1') });
    };
  }
}
