import type { NatsConnection, Subscription } from 'nats';
import { CloseCode, type AgentView } from '../../protocol/index.js';
import type { Db } from '../db/db.js';
import { transaction } from '../db/retry.js';
import type { Fleet } from '../fleet/fleet.js';
import { agentView, effectiveLabels, type AgentRecord, type AgentRepo } from '../fleet/repo.js';
import type { Logger } from '../log.js';
import type { NatsBus } from './nats-bus.js';
import type { OwnershipPeers } from './ownership.js';

interface Owner {
  node: string;
  generation: number;
}
interface Takeover {
  a: string;
  n: string;
  g: number;
}

/**
 * One fleet on every node: applies other nodes' presence events (online, offline, metrics,
 * changes) to this node's fleet records, so `GET /api/agents`, fleet views and selectors see the
 * whole fleet; closes this node's socket of an agent that connected anew elsewhere (takeover,
 * by connection generation); and, on the node holding the `presence` lease, marks the agents of a
 * node that died offline (`node lost`) once it has been missing from the node registry for a TTL.
 */
export class ClusterPresence implements OwnershipPeers {
  /** Agents owned by other nodes, with the generation they claimed. */
  private readonly owners = new Map<string, Owner>();
  private readonly reload = new Set<string>();
  private reloadTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<void> = Promise.resolve();
  private readonly subs: Subscription[] = [];
  private readonly unsubs: (() => void)[] = [];
  private fleet: Fleet | null = null;
  private repo: AgentRepo | null = null;
  private readonly enc = new TextEncoder();
  private readonly dec = new TextDecoder();

  constructor(
    private readonly d: {
      nc: NatsConnection;
      bus: NatsBus;
      db: Db;
      log: Logger;
      cluster: string;
      nodeId: string;
      /** Nodes alive in the registry now (this one included). */
      liveNodes: () => ReadonlySet<string>;
    },
  ) {}

  private get takeoverSubject(): string {
    return `${this.d.cluster}.presence.takeover`;
  }

  /** After the fleet is loaded: agents other live nodes own are online here too. */
  async attach(fleet: Fleet, repo: AgentRepo): Promise<void> {
    this.fleet = fleet;
    this.repo = repo;
    this.subs.push(
      this.d.nc.subscribe(this.takeoverSubject, {
        callback: (err, msg) => {
          if (err) return;
          try {
            this.onTakeover(JSON.parse(this.dec.decode(msg.data)) as Takeover);
          } catch (e) {
            this.d.log.warn({ err: e }, 'bad takeover message');
          }
        },
      }),
    );
    const bus = this.d.bus;
    this.unsubs.push(
      bus.subscribeRemote('agent.online', (p, origin) => {
        const id = p.agent.id;
        const o = this.owners.get(id);
        if (!o || o.node !== origin) this.owners.set(id, { node: origin, generation: o?.generation ?? 0 });
        if (fleet.isOnline(id)) return;
        const rec = fleet.get(id);
        // A reconnect with the facts this node already has (the common case: a restart, a network
        // blip, a dead node's agents moving) changed nothing in the record but the connection:
        // no database read. Otherwise labels (overrides, enrollment labels) and the rest come
        // with the reload.
        const same = rec !== undefined && sameFacts(rec, p.agent);
        if (rec) {
          // The host facts the hello reported (a new version after an update) are in the event:
          // applied now, so a read on this node right after the agent is back never shows the old ones.
          applyHostFacts(rec, p.agent);
          rec.status = 'online';
          rec.connectedAt = p.agent.connectedAt ? Date.parse(p.agent.connectedAt) : Date.now();
          rec.lastSeenAt = p.agent.lastSeenAt ? Date.parse(p.agent.lastSeenAt) : Date.now();
        }
        if (!same) this.scheduleReload(id);
      }),
      bus.subscribeRemote('agent.offline', (p, origin) => {
        // Stale news: the agent is connected here, or a newer connection is on another node.
        if (fleet.isOnline(p.agentId)) return false;
        const o = this.owners.get(p.agentId);
        if (o && o.node !== origin && p.reason !== 'node lost') return false;
        this.markOffline(p.agentId, Date.parse(p.at) || Date.now());
        return true;
      }),
      bus.subscribeRemote('agent.metrics', (p) => {
        for (const i of p.items) {
          if (fleet.isOnline(i.agentId)) continue;
          const rec = fleet.get(i.agentId);
          if (!rec) continue;
          rec.metrics = i.metrics;
          rec.lastSeenAt = Date.parse(i.lastSeenAt) || rec.lastSeenAt;
        }
      }),
      bus.subscribeRemote('agent.changed', (p) => this.scheduleReload(p.agent.id)),
      bus.subscribeRemote('agent.removed', (p, origin) => {
        // An undone enrollment. Stale news when a connection on another node has claimed the agent
        // since (it came back with the secret and enrolled again with it; the events of two nodes
        // arrive in any order): kept, and read again from the database.
        const o = this.owners.get(p.agentId);
        if (fleet.isOnline(p.agentId) || (o && o.node !== origin)) {
          this.scheduleReload(p.agentId);
          return false;
        }
        this.owners.delete(p.agentId);
        fleet.agents.delete(p.agentId);
        // The row may be back already (that claim's online event came first and was applied to the
        // record just dropped): the reload finds it.
        this.scheduleReload(p.agentId);
        return true;
      }),
    );
    // Agents already connected to other live nodes.
    const live = this.d.liveNodes();
    const rows = (await this.d
      .db('agents')
      .whereNotNull('owner_node')
      .whereNot('owner_node', this.d.nodeId)
      .select('id', 'owner_node', 'conn_generation', 'connected_at')) as {
      id: string;
      owner_node: string;
      conn_generation: number | string;
      connected_at: number | string | null;
    }[];
    let n = 0;
    for (const r of rows) {
      if (!live.has(r.owner_node)) continue;
      this.owners.set(r.id, { node: r.owner_node, generation: Number(r.conn_generation) });
      const rec = fleet.get(r.id);
      if (rec && !fleet.isOnline(r.id)) {
        rec.status = 'online';
        rec.connectedAt = r.connected_at == null ? Date.now() : Number(r.connected_at);
        n++;
      }
    }
    this.d.log.info({ agents: n }, 'cluster: agents online on other nodes');
  }

  claimed(agentId: string, generation: number): void {
    this.owners.delete(agentId);
    this.d.nc.publish(this.takeoverSubject, this.enc.encode(JSON.stringify({ a: agentId, n: this.d.nodeId, g: generation } satisfies Takeover)));
  }

  /** The other node that holds the agent's socket (null: none known). */
  ownerOf(agentId: string): string | null {
    const o = this.owners.get(agentId);
    return o && o.node !== this.d.nodeId && this.fleet?.get(agentId)?.status === 'online' ? o.node : null;
  }

  newerElsewhere(agentId: string, generation: number): boolean {
    const o = this.owners.get(agentId);
    return o !== undefined && o.node !== this.d.nodeId && o.generation > generation;
  }

  private onTakeover(t: Takeover): void {
    if (t.n === this.d.nodeId || !this.fleet) return;
    const cur = this.owners.get(t.a);
    if (!cur || cur.generation <= t.g) this.owners.set(t.a, { node: t.n, generation: t.g });
    const mine = this.fleet.generationOf(t.a);
    if (mine !== undefined && mine < t.g) {
      this.d.log.info({ agentId: t.a, node: t.n }, 'agent connected to another node: closing our older socket');
      this.fleet.kick(t.a, CloseCode.replaced, 'replaced');
    }
  }

  private markOffline(agentId: string, at: number): void {
    this.owners.delete(agentId);
    const rec = this.fleet?.get(agentId);
    if (!rec || this.fleet?.isOnline(agentId)) return;
    rec.status = 'offline';
    rec.lastSeenAt = Math.min(rec.lastSeenAt ?? at, at);
  }

  /** Record changes (labels, revoke, a new agent) are read from the database, in batches. */
  private scheduleReload(id: string): void {
    this.reload.add(id);
    this.reloadTimer ??= setTimeout(() => void this.flushReload(), 50);
  }

  private flushReload(): Promise<void> {
    this.reloadTimer = undefined;
    // One reload at a time: a slower earlier read finishing last would put back older facts.
    this.reloading = this.reloading.then(() => this.reloadNow());
    return this.reloading;
  }

  private async reloadNow(): Promise<void> {
    const { fleet, repo } = this;
    if (!fleet || !repo || this.reload.size === 0) return;
    const ids = [...this.reload];
    this.reload.clear();
    try {
      for (const row of await repo.loadMany(ids)) {
        const rec = fleet.get(row.id);
        const owned = this.owners.has(row.id);
        if (rec) {
          const { status, metrics, connectedAt, lastSeenAt } = rec;
          Object.assign(rec, row, {
            status,
            metrics,
            connectedAt: connectedAt ?? row.connectedAt,
            lastSeenAt: Math.max(lastSeenAt ?? 0, row.lastSeenAt ?? 0) || null,
          });
        } else {
          const created = { ...row, status: owned ? ('online' as const) : ('offline' as const) };
          fleet.agents.set(row.id, created);
          // Subscribers (fleet views) saw the event before the record existed: tell them again, here only.
          this.d.bus.deliverLocal('agent.changed', { agent: agentView(created) });
        }
        if (row.revokedAt != null && fleet.isOnline(row.id)) fleet.kick(row.id, CloseCode.revoked, 'revoked');
      }
    } catch (err) {
      this.d.log.warn({ err }, 'cluster: could not reload changed agents; retrying');
      for (const id of ids) this.scheduleReload(id);
    }
  }

  /**
   * On the `presence` lease holder: agents owned by nodes that left the registry (missing for a
   * TTL, so a node that just started is not mistaken for a dead one) are given up and marked
   * offline with `node lost`, and their open connection rows closed.
   */
  async sweepDeadNodes(dead: ReadonlySet<string>): Promise<void> {
    if (!this.fleet || dead.size === 0) return;
    for (const node of dead) {
      if (node === this.d.nodeId) continue;
      const now = Date.now();
      const ids = await transaction(this.d.db, async (trx) => {
        const rows = (await trx('agents').where({ owner_node: node }).forUpdate().select('id')) as { id: string }[];
        if (rows.length) await trx('agents').where({ owner_node: node }).update({ owner_node: null });
        await trx('agent_connections')
          .whereNull('disconnected_at')
          .where({ node })
          .update({ disconnected_at: now, reason: 'node lost', duration_ms: trx.raw('? - connected_at', [now]) });
        return rows.map((r) => r.id);
      });
      if (!ids.length) {
        this.d.log.warn({ node }, 'cluster: node lost; its open connection rows are closed');
        continue;
      }
      this.d.log.warn({ node, agents: ids.length }, 'cluster: node lost; its agents are offline until they reconnect');
      const at = new Date(now).toISOString();
      for (const id of ids) {
        if (this.fleet.isOnline(id)) continue;
        this.markOffline(id, now);
        const name = this.fleet.get(id)?.name;
        this.d.bus.publish('agent.offline', { agentId: id, reason: 'node lost', at, ...(name ? { name } : {}) });
      }
    }
  }

  /** Nodes that own agents, hold open connection rows or own running tasks (to be taken over) in the database. */
  async owningNodes(): Promise<Set<string>> {
    const owners = (await this.d.db('agents').whereNotNull('owner_node').distinct('owner_node')) as { owner_node: string }[];
    const open = (await this.d.db('agent_connections').whereNull('disconnected_at').whereNotNull('node').distinct('node')) as { node: string }[];
    const tasks = (await this.d.db('tasks').where({ status: 'running' }).whereNotNull('owner_node').distinct('owner_node')) as { owner_node: string }[];
    return new Set([...owners.map((r) => r.owner_node), ...open.map((r) => r.node), ...tasks.map((r) => r.owner_node)]);
  }

  close(): void {
    clearTimeout(this.reloadTimer);
    for (const s of this.subs) s.unsubscribe();
    for (const u of this.unsubs) u();
  }
}

/**
 * Whether another node's view of an agent says nothing this node's record does not: host facts,
 * effective labels, groups, revocation and policy. Then a reload from the database would read
 * the same row back.
 */
function sameFacts(rec: AgentRecord, v: AgentView): boolean {
  return (
    rec.name === v.name &&
    rec.hostname === v.hostname &&
    rec.externalIp === v.externalIp &&
    rec.platform === v.platform &&
    rec.arch === v.arch &&
    rec.os === v.os &&
    rec.version === v.version &&
    rec.cpus === v.cpus &&
    rec.memoryBytes === v.memoryBytes &&
    (rec.revokedAt != null) === v.revoked &&
    sameJson(rec.ips, v.ips) &&
    sameJson(rec.groups, v.groups) &&
    sameJson(effectiveLabels(rec), v.labels) &&
    (v.policy == null || sameJson(rec.policy, v.policy))
  );
}

function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** The facts an agent reports about its host in every hello, as another node's event carries them. */
function applyHostFacts(rec: AgentRecord, v: AgentView): void {
  rec.name = v.name;
  rec.hostname = v.hostname;
  rec.ips = v.ips;
  rec.externalIp = v.externalIp;
  rec.platform = v.platform;
  rec.arch = v.arch;
  rec.os = v.os;
  rec.version = v.version;
  rec.cpus = v.cpus;
  rec.memoryBytes = v.memoryBytes;
  if (v.policy) rec.policy = v.policy;
}
