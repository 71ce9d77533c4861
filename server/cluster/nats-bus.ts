import type { NatsConnection, Subscription } from 'nats';
import { LocalBus, type Bus, type BusEvents, type Handler, type SubscribeOptions, type Topic } from '../bus/bus.js';

/** NATS' default max_payload (1 MiB), when the server has not said its own yet. */
const DEFAULT_NATS_MAX_PAYLOAD = 1024 * 1024;

/** A bus event as it travels between nodes: the publishing node's id and the payload. */
interface Envelope {
  o: string;
  p: unknown;
}

/**
 * Handler of events that came from another node (cluster presence), told which node; returning
 * `false` drops the event for this node's other subscribers (stale news, e.g. an offline event
 * from a node that no longer owns the agent).
 */
export type RemoteHandler<T extends Topic> = (payload: BusEvents[T], origin: string) => boolean | void;

/**
 * The cluster bus: every event is delivered to this node's subscribers at once (synchronously,
 * like LocalBus) and published on `<cluster>.bus.<topic>`; events from other nodes are delivered
 * to the same subscribers. The origin node id travels with each event, so a node never handles its
 * own event twice. JSON codec: payloads are the same plain views the consoles receive.
 */
export class NatsBus implements Bus {
  private readonly local: LocalBus;
  /** Subscribers that see this node's own events only (`localOnly`). */
  private readonly own: LocalBus;
  private readonly remoteSubs = new Map<Topic, Set<(p: unknown, origin: string) => boolean | void>>();
  private readonly sub: Subscription;
  private readonly enc = new TextEncoder();
  private readonly dec = new TextDecoder();
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: {
      cluster: string;
      nodeId: string;
      onError: (err: unknown, topic: Topic | string) => void;
      /** Counts events in and out (metrics). */
      count?: (direction: 'in' | 'out') => void;
    },
  ) {
    this.local = new LocalBus(o.onError);
    this.own = new LocalBus(o.onError);
    const prefix = `${o.cluster}.bus.`;
    this.sub = nc.subscribe(`${prefix}>`, {
      callback: (err, msg) => {
        if (err) {
          o.onError(err, 'bus');
          return;
        }
        const topic = msg.subject.slice(prefix.length) as Topic;
        let env: Envelope;
        try {
          env = JSON.parse(this.dec.decode(msg.data)) as Envelope;
        } catch (e) {
          o.onError(e, topic);
          return;
        }
        if (env.o === o.nodeId) return; // our own event: delivered locally when published
        o.count?.('in');
        // Cluster presence first (it updates the fleet records the other subscribers read).
        const rs = this.remoteSubs.get(topic);
        let deliver = true;
        if (rs) {
          for (const h of rs) {
            try {
              if (h(env.p, env.o) === false) deliver = false;
            } catch (e) {
              o.onError(e, topic);
            }
          }
        }
        if (deliver) this.local.publish(topic, env.p as BusEvents[typeof topic]);
      },
    });
  }

  publish<T extends Topic>(topic: T, payload: BusEvents[T]): void {
    this.local.publish(topic, payload);
    this.own.publish(topic, payload);
    if (this.closed) return;
    try {
      // While NATS is reconnecting the client buffers (bounded by its reconnect buffer); an event
      // lost beyond it is repaired by the presence snapshot a node asks for when it reconnects.
      this.send(topic, payload);
    } catch (err) {
      this.o.onError(err, topic);
    }
  }

  /**
   * Sends one event to the other nodes. A batch event (`items`: agent.metrics, one per presence
   * flush with every agent heard from) grows with the fleet; larger than the server's max_payload
   * (NATS refuses it: MAX_PAYLOAD_EXCEEDED, and every other node would miss the whole flush) it goes
   * in parts, each a valid event of the same topic. Any other event that large is an error.
   */
  private send(topic: Topic, payload: unknown): void {
    const data = this.enc.encode(JSON.stringify({ o: this.o.nodeId, p: payload } satisfies Envelope));
    const max = this.nc.info?.max_payload ?? DEFAULT_NATS_MAX_PAYLOAD;
    const items = (payload as { items?: unknown }).items;
    if (data.length > max && Array.isArray(items) && items.length > 1) {
      // Parts of about 3/4 of the limit (items differ in size); a part still too large splits again.
      const parts = Math.min(items.length, Math.ceil(data.length / (max * 0.75)));
      const per = Math.ceil(items.length / parts);
      for (let i = 0; i < items.length; i += per) this.send(topic, { ...(payload as object), items: items.slice(i, i + per) });
      return;
    }
    this.nc.publish(`${this.o.cluster}.bus.${topic}`, data);
    this.o.count?.('out');
  }

  subscribe<T extends Topic>(topic: T, handler: Handler<T>, opts?: SubscribeOptions): () => void {
    return (opts?.localOnly ? this.own : this.local).subscribe(topic, handler);
  }

  /** Delivers an event to this node's subscribers only (never to other nodes). */
  deliverLocal<T extends Topic>(topic: T, payload: BusEvents[T]): void {
    this.local.publish(topic, payload);
  }

  /** Subscribes to events published by other nodes only (before the ordinary subscribers run). */
  subscribeRemote<T extends Topic>(topic: T, handler: RemoteHandler<T>): () => void {
    let set = this.remoteSubs.get(topic);
    if (!set) this.remoteSubs.set(topic, (set = new Set()));
    const h = handler as (p: unknown, origin: string) => boolean | void;
    set.add(h);
    return () => set.delete(h);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sub.unsubscribe();
    await this.local.close();
    await this.own.close();
    this.remoteSubs.clear();
  }
}
