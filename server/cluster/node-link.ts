import type { NatsConnection, Subscription } from 'nats';

/**
 * Handler of a node-addressed message: `meta` is its JSON part, `data` its binary part (empty when
 * none was sent), `from` the sending node. A request's answer is what the handler returns (JSON).
 */
export type NodeHandler = (meta: unknown, data: Uint8Array, from: string) => unknown;

/**
 * Node-addressed messages between server nodes (issue 12): deliver something to the node that
 * holds an agent's socket (or a task, or a terminal). `kind` names the handler, e.g. `exec.to-agent`
 * (letters, digits, `-`, `.`); one handler per kind per node.
 *
 * - `send(node, kind, meta, data?)`: fire and forget. Messages from one node to another on one kind
 *   arrive in the order sent (one NATS subject per destination and kind); none arrive while the
 *   destination is down or unsubscribed (callers reconcile as after a lost link). False when it
 *   cannot even be handed to NATS (closed, or not a known node on a single node).
 * - `request(node, kind, meta, data?, timeoutMs?)`: the destination handler's return value (awaited);
 *   rejects on timeout, no handler, or the handler's error (its message).
 * - `broadcast(kind, meta, data?)`: to every other node that handles `kind`.
 * - `handle(kind, handler)`: this node's handler of `kind`; returns the unsubscribe function.
 *
 * On a single node (`LocalNodeLink`) the interface is the same and every message is for this node:
 * `send`/`request` to this node's id call the handler in process (asynchronously, like NATS would),
 * to any other node `send` returns false and `request` rejects; `broadcast` reaches nobody.
 *
 * Wire format (NATS): subject `<cluster>.node.<base64url(nodeId)>.<kind>` (broadcast:
 * `<cluster>.nodes.<kind>`), body = 4-byte big-endian length of the JSON header, the header
 * `{"f": from, "m": meta}`, then the binary part. Request replies: `{"ok": true, "r": value}` or
 * `{"ok": false, "e": message}`.
 */
export interface NodeLink {
  readonly nodeId: string;
  send(node: string, kind: string, meta: unknown, data?: Uint8Array): boolean;
  request(node: string, kind: string, meta: unknown, data?: Uint8Array, timeoutMs?: number): Promise<unknown>;
  broadcast(kind: string, meta: unknown, data?: Uint8Array): void;
  handle(kind: string, handler: NodeHandler): () => void;
  close(): void;
}

/** Default wait for a request's answer (a node that is alive answers in milliseconds). */
export const NODE_REQUEST_TIMEOUT_MS = 5000;

const KIND = /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/;
const EMPTY = new Uint8Array(0);

function checkKind(kind: string): void {
  if (!KIND.test(kind)) throw new Error(`bad node message kind ${JSON.stringify(kind)} (letters, digits, '-', '.')`);
}

/** Subject token of a node id (node ids may contain dots, a hostname say). */
export const nodeToken = (id: string) => Buffer.from(id, 'utf8').toString('base64url');

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeFrame(from: string, meta: unknown, data: Uint8Array = EMPTY): Uint8Array {
  const head = enc.encode(JSON.stringify({ f: from, m: meta }));
  const out = new Uint8Array(4 + head.length + data.length);
  new DataView(out.buffer).setUint32(0, head.length);
  out.set(head, 4);
  out.set(data, 4 + head.length);
  return out;
}

export function decodeFrame(buf: Uint8Array): { from: string; meta: unknown; data: Uint8Array } {
  if (buf.length < 4) throw new Error('node message too short');
  const n = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(0);
  if (4 + n > buf.length) throw new Error('node message header longer than the message');
  const h = JSON.parse(dec.decode(buf.subarray(4, 4 + n))) as { f?: unknown; m?: unknown };
  if (typeof h.f !== 'string') throw new Error('node message without its sender');
  return { from: h.f, meta: h.m, data: buf.subarray(4 + n) };
}

/** Node-addressed messages over NATS (see NodeLink). */
export class NatsNodeLink implements NodeLink {
  private readonly subs = new Map<string, Subscription[]>();
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly o: {
      cluster: string;
      nodeId: string;
      onError: (err: unknown, kind: string) => void;
      /** Counts messages in and out (metrics). */
      count?: (direction: 'in' | 'out') => void;
    },
  ) {}

  get nodeId(): string {
    return this.o.nodeId;
  }

  private subject(node: string, kind: string): string {
    return `${this.o.cluster}.node.${nodeToken(node)}.${kind}`;
  }

  send(node: string, kind: string, meta: unknown, data?: Uint8Array): boolean {
    checkKind(kind);
    if (this.closed || this.nc.isClosed()) return false;
    try {
      this.nc.publish(this.subject(node, kind), encodeFrame(this.o.nodeId, meta, data));
      this.o.count?.('out');
      return true;
    } catch (err) {
      this.o.onError(err, kind);
      return false;
    }
  }

  async request(node: string, kind: string, meta: unknown, data?: Uint8Array, timeoutMs = NODE_REQUEST_TIMEOUT_MS): Promise<unknown> {
    checkKind(kind);
    if (this.closed) throw new Error('node link closed');
    this.o.count?.('out');
    let reply;
    try {
      reply = await this.nc.request(this.subject(node, kind), encodeFrame(this.o.nodeId, meta, data), { timeout: timeoutMs });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '503') throw new Error(`node ${node} does not handle ${kind} (not running?)`);
      if (code === 'TIMEOUT') throw new Error(`node ${node} did not answer ${kind} within ${timeoutMs} ms`);
      throw err;
    }
    const r = JSON.parse(dec.decode(reply.data)) as { ok: boolean; r?: unknown; e?: string };
    if (!r.ok) throw new Error(r.e ?? `node ${node} failed ${kind}`);
    return r.r;
  }

  broadcast(kind: string, meta: unknown, data?: Uint8Array): void {
    checkKind(kind);
    if (this.closed || this.nc.isClosed()) return;
    try {
      this.nc.publish(`${this.o.cluster}.nodes.${kind}`, encodeFrame(this.o.nodeId, meta, data));
      this.o.count?.('out');
    } catch (err) {
      this.o.onError(err, kind);
    }
  }

  handle(kind: string, handler: NodeHandler): () => void {
    checkKind(kind);
    if (this.subs.has(kind)) throw new Error(`node message kind ${kind} already has a handler`);
    const callback = (broadcast: boolean) => (err: Error | null, msg: { data: Uint8Array; reply?: string; respond(data: Uint8Array): boolean }) => {
      if (err) return this.o.onError(err, kind);
      let f: ReturnType<typeof decodeFrame>;
      try {
        f = decodeFrame(msg.data);
      } catch (e) {
        return this.o.onError(e, kind);
      }
      if (broadcast && f.from === this.o.nodeId) return; // our own broadcast
      this.o.count?.('in');
      const answer = (v: { ok: boolean; r?: unknown; e?: string }) => {
        if (msg.reply) msg.respond(enc.encode(JSON.stringify(v)));
      };
      try {
        const r = handler(f.meta, f.data, f.from);
        if (r instanceof Promise) {
          r.then(
            (v: unknown) => answer({ ok: true, r: v ?? null }),
            (e: unknown) => {
              if (!msg.reply) this.o.onError(e, kind);
              answer({ ok: false, e: (e as Error).message ?? String(e) });
            },
          );
        } else answer({ ok: true, r: r ?? null });
      } catch (e) {
        if (!msg.reply) this.o.onError(e, kind);
        answer({ ok: false, e: (e as Error).message ?? String(e) });
      }
    };
    const subs = [
      this.nc.subscribe(this.subject(this.o.nodeId, kind), { callback: callback(false) }),
      this.nc.subscribe(`${this.o.cluster}.nodes.${kind}`, { callback: callback(true) }),
    ];
    this.subs.set(kind, subs);
    return () => {
      if (this.subs.get(kind) !== subs) return;
      this.subs.delete(kind);
      for (const s of subs) s.unsubscribe();
    };
  }

  close(): void {
    this.closed = true;
    for (const subs of this.subs.values()) for (const s of subs) s.unsubscribe();
    this.subs.clear();
  }
}

/** A cluster of one: every message is for this node (see NodeLink). */
export class LocalNodeLink implements NodeLink {
  private readonly handlers = new Map<string, NodeHandler>();

  constructor(
    readonly nodeId: string,
    private readonly onError: (err: unknown, kind: string) => void = () => {},
  ) {}

  send(node: string, kind: string, meta: unknown, data: Uint8Array = EMPTY): boolean {
    checkKind(kind);
    const h = this.handlers.get(kind);
    if (node !== this.nodeId || !h) return false;
    // Through JSON like the wire, so a caller never shares objects with the handler.
    const m = meta === undefined ? undefined : (JSON.parse(JSON.stringify(meta)) as unknown);
    const copy = data.slice();
    queueMicrotask(() => {
      try {
        const r = h(m, copy, this.nodeId);
        if (r instanceof Promise) r.catch((e: unknown) => this.onError(e, kind));
      } catch (e) {
        this.onError(e, kind);
      }
    });
    return true;
  }

  async request(node: string, kind: string, meta: unknown, data: Uint8Array = EMPTY): Promise<unknown> {
    checkKind(kind);
    const h = this.handlers.get(kind);
    if (node !== this.nodeId) throw new Error(`no node ${node} (single node ${this.nodeId})`);
    if (!h) throw new Error(`node ${node} does not handle ${kind} (not running?)`);
    await Promise.resolve();
    const m = meta === undefined ? undefined : (JSON.parse(JSON.stringify(meta)) as unknown);
    const r = (await h(m, data.slice(), this.nodeId)) ?? null;
    return JSON.parse(JSON.stringify(r)) as unknown;
  }

  broadcast(kind: string, _meta?: unknown, _data?: Uint8Array): void {
    checkKind(kind);
  }

  handle(kind: string, handler: NodeHandler): () => void {
    checkKind(kind);
    if (this.handlers.has(kind)) throw new Error(`node message kind ${kind} already has a handler`);
    this.handlers.set(kind, handler);
    return () => {
      if (this.handlers.get(kind) === handler) this.handlers.delete(kind);
    };
  }

  close(): void {
    this.handlers.clear();
  }
}
