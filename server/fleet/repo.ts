import { HostPolicy, type AgentView, type Hello, type Labels, type Metrics } from '../../protocol/index.js';
import type { Knex } from 'knex';
import type { Db } from '../db/db.js';
import { parseJson } from '../db/db.js';
import { retryOnConflict, transaction, txRetryOf } from '../db/retry.js';

/** One agent as the server holds it in memory (every agent, online or not). */
export interface AgentRecord {
  id: string;
  name: string;
  hostname: string;
  ips: string[];
  externalIp: string | null;
  platform: string;
  arch: string;
  os: string;
  version: string;
  cpus: number;
  memoryBytes: number;
  /** Labels from the agent's own config. */
  labels: Labels;
  /** Labels set by an operator; when set they replace the agent's own (and its enrollment labels). */
  labelOverrides: Labels | null;
  /** Labels its enrollment token applied; merged over the agent's own, whatever it reports later. */
  enrollLabels: Labels | null;
  groups: string[];
  secretHash: string;
  createdAt: number;
  connectedAt: number | null;
  lastSeenAt: number | null;
  revokedAt: number | null;
  status: 'online' | 'offline';
  metrics: Metrics | null;
  /** The host's policy as last reported (hello or `policy`); null until an agent that has one reports it. */
  policy: HostPolicy | null;
}

const iso = (t: number | null) => (t == null ? null : new Date(t).toISOString());

/** The public JSON view of an agent. */
export function agentView(a: AgentRecord): AgentView {
  return {
    id: a.id,
    name: a.name,
    hostname: a.hostname,
    ips: a.ips,
    externalIp: a.externalIp,
    platform: a.platform,
    arch: a.arch,
    os: a.os,
    version: a.version,
    cpus: a.cpus,
    memoryBytes: a.memoryBytes,
    labels: effectiveLabels(a),
    groups: a.groups,
    status: a.status,
    connectedAt: a.status === 'online' ? iso(a.connectedAt) : null,
    lastSeenAt: iso(a.lastSeenAt),
    metrics: a.metrics,
    revoked: a.revokedAt != null,
    policy: a.policy,
  };
}

/** Effective labels: operator overrides win; otherwise the enrollment token's labels over the agent's own. */
export function effectiveLabels(a: AgentRecord): Labels {
  return a.labelOverrides ?? (a.enrollLabels ? { ...a.labels, ...a.enrollLabels } : a.labels);
}

function fromRow(r: Record<string, unknown>): AgentRecord {
  const n = (v: unknown) => (v == null ? null : Number(v));
  return {
    id: String(r['id']),
    name: String(r['name']),
    hostname: String(r['hostname']),
    ips: parseJson(r['ips'], []),
    externalIp: (r['external_ip'] as string | null) ?? null,
    platform: String(r['platform']),
    arch: String(r['arch']),
    os: String(r['os']),
    version: String(r['version']),
    cpus: Number(r['cpus']),
    memoryBytes: Number(r['memory_bytes']),
    labels: parseJson(r['labels'], {}),
    labelOverrides: parseJson(r['label_overrides'], null),
    enrollLabels: parseJson(r['enrol_labels'], null),
    groups: parseJson(r['groups'], []),
    secretHash: String(r['secret_hash']),
    createdAt: Number(r['created_at']),
    connectedAt: n(r['connected_at']),
    lastSeenAt: n(r['last_seen_at']),
    revokedAt: n(r['revoked_at']),
    status: 'offline',
    metrics: null,
    policy: storedPolicy(r['policy']),
  };
}

/** The stored policy column, or null when absent or not a valid policy (never trusted blindly). */
function storedPolicy(v: unknown): HostPolicy | null {
  const p = HostPolicy.safeParse(parseJson(v, null));
  return p.success ? p.data : null;
}

/** Agents table access. The in-memory map in Fleet is the read path; this is the write path. */
/** The agent row's columns that a hello reports (facts of the host), as stored when it connects. */
function helloColumns(h: Hello, now: number) {
  return {
    name: h.name,
    hostname: h.hostname,
    ips: JSON.stringify(h.ips),
    external_ip: h.externalIp ?? null,
    platform: h.platform,
    arch: h.arch,
    os: h.os,
    version: h.agentVersion,
    cpus: h.cpus,
    memory_bytes: h.memoryBytes,
    labels: JSON.stringify(h.labels),
    connected_at: now,
    last_seen_at: now,
  };
}

export class AgentRepo {
  constructor(private readonly db: Db) {}

  async loadAll(): Promise<AgentRecord[]> {
    return (await this.db('agents').select()).map(fromRow);
  }

  /** Some agents (cluster: agents another node registered or changed). */
  async loadMany(ids: string[]): Promise<AgentRecord[]> {
    const out: AgentRecord[] = [];
    for (let i = 0; i < ids.length; i += 10_000)
      out.push(
        ...(
          await this.db('agents')
            .whereIn('id', ids.slice(i, i + 10_000))
            .select()
        ).map(fromRow),
      );
    return out;
  }

  /** Inserts a newly enrolled agent or refreshes the facts of a known one from its hello. */
  async upsertFromHello(h: Hello, secretHash: string, now: number, isNew: boolean, q: Knex = this.db): Promise<void> {
    const facts = {
      ...helloColumns(h, now),
      // An agent that reports no policy keeps the last one stored: it may be an older build, and
      // forgetting the restriction would let the server dispatch what the host refuses anyway.
      ...(h.policy ? { policy: JSON.stringify(h.policy) } : {}),
    };
    if (isNew) {
      await q('agents').insert({
        id: h.agentId,
        ...facts,
        groups: '[]',
        label_overrides: null,
        enrol_labels: null,
        secret_hash: secretHash,
        created_at: now,
        revoked_at: null,
      });
    } else {
      await q('agents').where({ id: h.agentId }).update(facts);
    }
  }

  /**
   * Enrolls a new agent: claims its id atomically (a plain insert, so a second enrollment of the same
   * id fails on the primary key whichever node or socket tries it) together with `consume` (the
   * enrollment token's use), in one transaction. Throws EnrollmentRefused when either fails.
   */
  async claim(
    h: Hello,
    secretHash: string,
    now: number,
    enrollLabels: Labels | null,
    consume?: (trx: Knex.Transaction) => Promise<boolean>,
    /** The row's first conn_generation (see Fleet.connect: an enrollment with a secret the agent already holds). */
    generation = 0,
  ): Promise<void> {
    const insert = async (db: Knex) => {
      try {
        await db('agents').insert({
          id: h.agentId,
          ...helloColumns(h, now),
          groups: '[]',
          label_overrides: null,
          enrol_labels: enrollLabels ? JSON.stringify(enrollLabels) : null,
          secret_hash: secretHash,
          created_at: now,
          revoked_at: null,
          policy: h.policy ? JSON.stringify(h.policy) : null,
          ...(generation ? { conn_generation: generation } : {}),
        });
      } catch (err) {
        if (/UNIQUE constraint|Duplicate entry|ER_DUP_ENTRY/i.test(String((err as Error)?.message ?? err))) {
          throw new EnrollmentRefused('this agent id is already enrolled');
        }
        throw err;
      }
    };
    // Nothing to consume (MUSTER_ENROLL_TOKEN): one statement, atomic on its own. A transaction
    // here cost a knex transactor per agent (tens of KB of objects that outlived the young
    // generation in an enrollment storm of thousands, swelling the old generation).
    if (!consume) return void (await retryOnConflict(() => insert(this.db), txRetryOf(this.db)));
    // Run again on a lock conflict (enrollments racing on one token's row, on several nodes).
    await transaction(this.db, async (trx) => {
      if (!(await consume(trx))) throw new EnrollmentRefused('the enrollment token is used up, expired or revoked');
      await insert(trx);
    });
  }

  /**
   * Undoes `claim` (see Fleet.abandonEnrollment): deletes the agent row only if it still carries
   * `secretHash` and, when `generation` is given, no later connection claimed it (the agent came
   * back with that secret, on any node), and gives the token use back, in one transaction. True
   * when a claim was undone.
   */
  async unclaim(id: string, secretHash: string, release?: (trx: Knex.Transaction) => Promise<void>, generation = 0): Promise<boolean> {
    return transaction(this.db, async (trx) => {
      const q = trx('agents').where({ id, secret_hash: secretHash });
      if (generation > 0) q.where('conn_generation', '<=', generation);
      const n = await q.del();
      if (n !== 1) return false;
      // Its connection history goes too: the agent never enrolled as far as anyone can tell.
      await trx('agent_connections').where({ agent_id: id }).del();
      if (release) await release(trx);
      return true;
    });
  }

  async updatePolicy(id: string, policy: HostPolicy): Promise<void> {
    await this.db('agents')
      .where({ id })
      .update({ policy: JSON.stringify(policy) });
  }

  async updateLabels(id: string, labels: Labels): Promise<void> {
    await this.db('agents')
      .where({ id })
      .update({ labels: JSON.stringify(labels) });
  }

  async patch(id: string, p: { labelOverrides?: Labels | null; groups?: string[] }): Promise<void> {
    const upd: Record<string, unknown> = {};
    if (p.labelOverrides !== undefined) upd['label_overrides'] = p.labelOverrides === null ? null : JSON.stringify(p.labelOverrides);
    if (p.groups !== undefined) upd['groups'] = JSON.stringify(p.groups);
    await this.db('agents').where({ id }).update(upd);
  }

  async revoke(id: string, at: number): Promise<void> {
    await this.db('agents').where({ id }).update({ revoked_at: at });
  }

  /**
   * last_seen_at of many agents at once: one statement per 30,000 ids (under SQLite's 32,766
   * bound parameters; far under MySQL's packet limit), so one statement per flush in practice.
   */
  async touchMany(ids: string[], at: number, ownerNode: string | null = null, chunk = 30_000, db: Knex = this.db): Promise<number> {
    let statements = 0;
    // In id order: every writer of agents rows locks them in the same order (no deadlock between them).
    ids = [...ids].sort();
    for (let i = 0; i < ids.length; i += chunk) {
      const q = db('agents').whereIn('id', ids.slice(i, i + chunk));
      // In a cluster: only agents this node owns (a node whose agent moved on cannot write for it).
      if (ownerNode !== null) q.where('owner_node', ownerNode);
      // A statement of its own (autocommit) runs again on a lock conflict; inside a caller's
      // transaction the conflict has aborted the whole transaction, which is the caller's to retry.
      if (db === this.db) await retryOnConflict(() => q.clone().update({ last_seen_at: at }), txRetryOf(this.db));
      else await q.update({ last_seen_at: at });
      statements++;
    }
    return statements;
  }
}

/** An enrollment the server refuses (the id is taken, the token is no longer valid): not an outage. */
export class EnrollmentRefused extends Error {}

/**
 * A connection's claim of an agent found no row carrying the secret it presented: the agent's
 * enrollment was undone (or the agent enrolled anew) after the upgrade checked the secret. Nothing
 * was written for that connection.
 */
export class ClaimLost extends Error {
  constructor(readonly agentId: string) {
    super('the agent is no longer enrolled with this secret');
  }
}

/** agent_connections: one row per socket, opened at hello and closed with a reason. */
export class ConnectionRepo {
  constructor(private readonly db: Db) {}

  async open(agentId: string, at: number, remoteAddress: string | null, node: string, q: Knex = this.db): Promise<number> {
    const res = await q('agent_connections').insert({ agent_id: agentId, connected_at: at, remote_address: remoteAddress, node }, ['id']);
    const first = res[0] as unknown;
    return typeof first === 'object' && first !== null ? Number((first as { id: number }).id) : Number(first);
  }

  async close(id: number, at: number, reason: string, q: Knex = this.db): Promise<void> {
    // One statement: the duration is computed by the database from the stored connected_at.
    await q('agent_connections')
      .where({ id })
      .whereNull('disconnected_at')
      .update({ disconnected_at: at, reason, duration_ms: this.db.raw('? - connected_at', [at]) });
  }

  /** Closes many rows with the same reason (server shutdown), one statement per 30,000 ids. */
  async closeMany(ids: number[], at: number, reason: string): Promise<void> {
    for (let i = 0; i < ids.length; i += 30_000) {
      await this.db('agent_connections')
        .whereIn('id', ids.slice(i, i + 30_000))
        .whereNull('disconnected_at')
        .update({ disconnected_at: at, reason, duration_ms: this.db.raw('? - connected_at', [at]) });
    }
  }

  /** After a crash: every row still open (on this node) is closed with `reason`. Returns how many. */
  async closeDangling(node: string, at: number, reason: string): Promise<number> {
    return this.db('agent_connections')
      .whereNull('disconnected_at')
      .where({ node })
      .update({ disconnected_at: at, reason, duration_ms: this.db.raw('? - connected_at', [at]) });
  }

  async list(agentId: string, limit: number, offset: number) {
    const [{ n }] = (await this.db('agent_connections').where({ agent_id: agentId }).count({ n: '*' })) as [{ n: number | string }];
    const rows = await this.db('agent_connections').where({ agent_id: agentId }).orderBy('id', 'desc').limit(limit).offset(offset);
    const items = rows.map((r) => ({
      id: Number(r.id),
      connectedAt: iso(Number(r.connected_at)),
      disconnectedAt: iso(r.disconnected_at == null ? null : Number(r.disconnected_at)),
      durationMs: r.duration_ms == null ? null : Number(r.duration_ms),
      reason: r.reason ?? null,
      remoteAddress: r.remote_address ?? null,
      node: (r.node as string | null) ?? null,
    }));
    return { items, total: Number(n) };
  }

  /** Most recent connection events across the fleet (dashboard). */
  async recent(limit: number) {
    const rows = await this.db('agent_connections').orderBy('id', 'desc').limit(limit);
    return rows.map((r) => ({
      id: Number(r.id),
      agentId: r.agent_id as string,
      connectedAt: iso(Number(r.connected_at)),
      disconnectedAt: iso(r.disconnected_at == null ? null : Number(r.disconnected_at)),
      reason: r.reason ?? null,
    }));
  }
}
