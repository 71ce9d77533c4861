/**
 * The live fleet as the console holds it. Agents live in a plain (non-reactive) Map; socket events
 * mutate it and mark it dirty, and one requestAnimationFrame per frame publishes the change by
 * bumping `fleetVersion`. So 10,000 agents heartbeating cost one re-render per frame at most, never
 * one per heartbeat. Changed agents are replaced by new objects, so tables see which rows changed.
 */
import { computed, effectScope, ref, shallowRef } from 'vue';
import type { AgentView } from '../../../../protocol/console-messages';
import { api, type ListResult } from '../../api/client';
import { onMessage, onReady } from '../../composables/socket';

export interface ConnectionEvent { key: string; agentId: string; name: string; kind: 'online' | 'offline'; at: string; reason: string | null }

const agents = new Map<string, AgentView>();
/** Ids sorted by name; rebuilt only when membership or names change, not on heartbeats. */
let order: string[] = [];
let orderDirty = true;
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

/** Bumped (at most once per frame) whenever any agent changed. */
export const fleetVersion = shallowRef(0);
/** Bumped when agents joined, left, changed status or facts (not for metrics): selector matches may change. */
export const fleetShapeVersion = shallowRef(0);
export const fleetLoaded = ref(false);
export const fleetError = ref('');
export const connectionEvents = shallowRef<ConnectionEvent[]>([]);

let early: Promise<AgentView[] | null> | null = null;
/** The list fetched after the socket's `ready` (the truth events apply to) has arrived. */
let authoritative = false;
let frame = 0;
let fallback: ReturnType<typeof setTimeout> | null = null;
let shapeChanged = false;
let pending: Array<() => void> | null = null;
let started = false;
let eventSeq = 0;

function publish(): void {
  if (frame) cancelAnimationFrame(frame);
  if (fallback) clearTimeout(fallback);
  frame = 0;
  fallback = null;
  fleetVersion.value++;
  if (shapeChanged) {
    shapeChanged = false;
    fleetShapeVersion.value++;
  }
}
function touch(shape = false): void {
  if (shape) shapeChanged = true;
  if (frame) return;
  frame = requestAnimationFrame(publish);
  // Hidden or throttled pages may not run animation frames; publish anyway, just less often.
  fallback = setTimeout(publish, 250);
}

function addEvent(e: Omit<ConnectionEvent, 'key'>): void {
  connectionEvents.value = [{ ...e, key: String(++eventSeq) }, ...connectionEvents.value].slice(0, 50);
}

function apply(fn: () => void): void {
  if (pending) pending.push(fn);
  else fn();
}

/**
 * Fetches the fleet as the page starts, before the session check and the socket are done, so the
 * agents view can paint sooner. That snapshot may predate the socket's subscription, so it is only
 * a first picture: the list fetched after `ready` replaces it (and wins if it arrives first).
 */
export function prefetchFleet(): void {
  early ??= fetch('/api/agents?limit=50000', { credentials: 'same-origin' })
    .then((r) => (r.ok ? (r.json() as Promise<ListResult<AgentView>>) : null))
    .then((r) => r?.items ?? null, () => null);
}

async function reload(): Promise<void> {
  pending = [];
  try {
    const r = await api.get<ListResult<AgentView>>('/api/agents', { limit: 50_000 });
    authoritative = true;
    agents.clear();
    for (const a of r.items) agents.set(a.id, a);
    orderDirty = true;
    fleetError.value = '';
    fleetLoaded.value = true;
  } catch (err) {
    fleetError.value = (err as Error).message;
  } finally {
    const queued = pending ?? [];
    pending = null;
    for (const fn of queued) fn();
    touch(true);
  }
}

/** Starts following the fleet (once per page). */
export function startFleet(): void {
  if (started) return;
  started = true;
  void early?.then((items) => {
    if (!items || authoritative) return;
    for (const a of items) agents.set(a.id, a);
    orderDirty = true;
    fleetLoaded.value = true;
    touch(true);
  });
  // Page-lifetime subscriptions: a detached scope, so no component's unmount disposes them.
  effectScope(true).run(() => {
    onReady(() => void reload());
    onMessage('agent.online', (m) => apply(() => {
      const prev = agents.get(m.agent.id);
      if (!prev || prev.name !== m.agent.name) orderDirty = true;
      agents.set(m.agent.id, m.agent);
      addEvent({ agentId: m.agent.id, name: m.agent.name, kind: 'online', at: m.agent.connectedAt ?? new Date().toISOString(), reason: null });
      touch(true);
    }));
    onMessage('agent.changed', (m) => apply(() => {
      const prev = agents.get(m.agent.id);
      if (!prev || prev.name !== m.agent.name) orderDirty = true;
      agents.set(m.agent.id, m.agent);
      touch(true);
    }));
    onMessage('agent.offline', (m) => apply(() => {
      const a = agents.get(m.agentId);
      if (a) agents.set(a.id, { ...a, status: 'offline', connectedAt: null });
      addEvent({ agentId: m.agentId, name: a?.name ?? m.agentId, kind: 'offline', at: m.at, reason: m.reason });
      touch(true);
    }));
    onMessage('agent.removed', (m) => apply(() => {
      if (agents.delete(m.agentId)) orderDirty = true;
      touch(true);
    }));
    onMessage('agent.metrics', (m) => apply(() => {
      for (const it of m.items) {
        const a = agents.get(it.agentId);
        if (a) agents.set(a.id, { ...a, metrics: it.metrics, lastSeenAt: it.lastSeenAt });
      }
      touch();
    }));
  });
}

/**
 * Applies an agent as a REST call answered it (PATCH, GET after revoke): the server does not push
 * every change to consoles, so the console that made it shows it at once.
 */
export function upsertAgent(a: AgentView): void {
  apply(() => {
    const prev = agents.get(a.id);
    if (!prev || prev.name !== a.name) orderDirty = true;
    agents.set(a.id, a);
    touch(true);
  });
}

/** All agents sorted by name (re-evaluated once per published frame). */
export const fleetList = computed<AgentView[]>(() => {
  void fleetVersion.value;
  if (orderDirty) {
    order = [...agents.values()].sort((a, b) => collator.compare(a.name, b.name) || (a.id < b.id ? -1 : 1)).map((a) => a.id);
    orderDirty = false;
  }
  const out: AgentView[] = [];
  for (const id of order) {
    const a = agents.get(id);
    if (a) out.push(a);
  }
  return out;
});

/** One agent, live. */
export function fleetAgent(id: string): AgentView | undefined {
  void fleetVersion.value;
  return agents.get(id);
}

/** Fleet-wide counts, live. */
export const fleetCounts = computed(() => {
  const c = { total: 0, online: 0, offline: 0, byVersion: new Map<string, number>(), byPlatform: new Map<string, number>() };
  for (const a of fleetList.value) {
    if (a.revoked) continue;
    c.total++;
    c[a.status]++;
    c.byVersion.set(a.version, (c.byVersion.get(a.version) ?? 0) + 1);
    const p = `${a.platform}/${a.arch}`;
    c.byPlatform.set(p, (c.byPlatform.get(p) ?? 0) + 1);
  }
  return c;
});
