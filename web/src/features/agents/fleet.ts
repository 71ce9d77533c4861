/**
 * What every page knows about the fleet as a whole: the counts (from GET /api/agents/summary,
 * refreshed at most every 2 s while agents come and go) and the latest connection events. The
 * agents themselves are never all loaded: tables follow server-side fleet views (view.ts), so a
 * 100,000-agent fleet costs the page what its window costs.
 */
import { effectScope, shallowRef } from 'vue';
import { api } from '../../api/client';
import { coalesced } from '../../composables/batch';
import { onMessage, onReady, send } from '../../composables/socket';

export interface ConnectionEvent {
  key: string;
  agentId: string;
  name: string;
  kind: 'online' | 'offline';
  at: string;
  reason: string | null;
}
export interface FleetCounts {
  total: number;
  online: number;
  offline: number;
  byVersion: Map<string, number>;
  byPlatform: Map<string, number>;
}
interface Summary {
  total: number;
  byStatus: Record<string, number>;
  byVersion: Record<string, number>;
  byPlatform: Record<string, number>;
}

export const fleetCounts = shallowRef<FleetCounts>({ total: 0, online: 0, offline: 0, byVersion: new Map(), byPlatform: new Map() });
export const connectionEvents = shallowRef<ConnectionEvent[]>([]);
/** Bumped (at most once a second) when agents join, leave or change: selector matches may have changed. */
export const fleetShapeVersion = shallowRef(0);

const COUNTS_EVERY_MS = 2000;
let started = false;
let eventSeq = 0;

async function loadCounts(): Promise<void> {
  try {
    const s = await api.get<Summary>('/api/agents/summary');
    fleetCounts.value = {
      total: s.total,
      online: s.byStatus['online'] ?? 0,
      offline: s.byStatus['offline'] ?? 0,
      byVersion: new Map(Object.entries(s.byVersion)),
      byPlatform: new Map(Object.entries(s.byPlatform)),
    };
  } catch {
    // Keep the last counts; the next event or reconnect tries again.
  }
}

const counts = coalesced(loadCounts, COUNTS_EVERY_MS);
const shape = coalesced(() => fleetShapeVersion.value++, 1000);

/** Agents came or went: counts again soon, never more than once per COUNTS_EVERY_MS. */
function changed(): void {
  counts.schedule();
  shape.schedule();
}

function addEvent(e: Omit<ConnectionEvent, 'key'>): void {
  connectionEvents.value = [{ ...e, key: String(++eventSeq) }, ...connectionEvents.value].slice(0, 50);
}

/** Starts following the fleet (once per page). */
export function startFleet(): void {
  if (started) return;
  started = true;
  // Page-lifetime subscriptions: a detached scope, so no component's unmount disposes them.
  effectScope(true).run(() => {
    onReady(() => {
      // This console follows views: it does not want every heartbeat of the fleet.
      send({ type: 'fleet.feed', metrics: false });
      void loadCounts();
    });
    onMessage('agent.online', (m) => {
      addEvent({ agentId: m.agent.id, name: m.agent.name, kind: 'online', at: m.agent.connectedAt ?? new Date().toISOString(), reason: null });
      changed();
    });
    onMessage('agent.offline', (m) => {
      addEvent({ agentId: m.agentId, name: m.name ?? m.agentId, kind: 'offline', at: m.at, reason: m.reason });
      changed();
    });
    onMessage('agent.changed', changed);
    onMessage('agent.removed', changed);
  });
}
