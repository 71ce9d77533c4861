import type { AgentView, ExecutionView, Metrics, TaskView } from '../../protocol/index.js';

/**
 * A session, token or user changed: live sockets acting for it are closed (`sessionEnded`) and
 * must re-authenticate. `user.changed` covers role changes, disabling and password resets.
 */
export type AuthEvent =
  | { kind: 'session.ended'; sessionId: string }
  | { kind: 'token.ended'; tokenId: number }
  /** `rightsReduced`: disabled, password reset or a lower role (its detached terminals end too). */
  | { kind: 'user.changed'; userId: number; rightsReduced: boolean };

/** Events services publish; the socket layer (and, with NATS, other nodes) subscribe. */
export interface BusEvents {
  'agent.online': { agent: AgentView };
  'agent.offline': { agentId: string; reason: string; at: string; name?: string };
  'agent.changed': { agent: AgentView };
  'agent.removed': { agentId: string };
  'agent.metrics': { items: { agentId: string; metrics: Metrics; lastSeenAt: string }[] };
  'task.updated': { task: TaskView };
  'execution.updated': { execution: ExecutionView };
  'rollout.updated': { rolloutId: string };
  'distribution.updated': { distributionId: string; fileId: string };
  /** A rollout paused, or one of its targets failed or was rolled back (notifications listen). */
  'rollout.event': {
    rolloutId: string;
    version: string;
    event: 'paused' | 'target.failed' | 'target.rolled_back';
    agentId: string | null;
    agentName: string | null;
    reason: string | null;
  };
  'auth.changed': AuthEvent;
}
export type Topic = keyof BusEvents;
export type Handler<T extends Topic> = (payload: BusEvents[T]) => void;
export interface SubscribeOptions {
  /**
   * Only events published by this node (in a cluster every node receives every event): for work
   * that must happen once per event, such as a notification, and is done where it happened.
   */
  localOnly?: boolean;
}

/** Publish/subscribe between services and the socket layer. */
export interface Bus {
  publish<T extends Topic>(topic: T, payload: BusEvents[T]): void;
  /** Returns the unsubscribe function. */
  subscribe<T extends Topic>(topic: T, handler: Handler<T>, opts?: SubscribeOptions): () => void;
  close(): Promise<void>;
}

/** In-process bus: synchronous delivery; a throwing subscriber does not affect the others. */
export class LocalBus implements Bus {
  private readonly subs = new Map<Topic, Set<(p: unknown) => void>>();
  constructor(private readonly onError: (err: unknown, topic: Topic) => void = () => {}) {}

  publish<T extends Topic>(topic: T, payload: BusEvents[T]): void {
    const set = this.subs.get(topic);
    if (!set) return;
    for (const h of set) {
      try {
        h(payload);
      } catch (err) {
        this.onError(err, topic);
      }
    }
  }

  /** Every event of one process is local: `opts` changes nothing here. */
  subscribe<T extends Topic>(topic: T, handler: Handler<T>, _opts?: SubscribeOptions): () => void {
    let set = this.subs.get(topic);
    if (!set) this.subs.set(topic, (set = new Set()));
    const h = handler as (p: unknown) => void;
    set.add(h);
    return () => set.delete(h);
  }

  async close(): Promise<void> {
    this.subs.clear();
  }
}
