import type { ConsoleMessage, SendOpts, ServerToConsole } from '../../protocol/index.js';
import type { Principal } from '../auth/auth-service.js';
import type { Core } from '../core.js';
import type { ConsoleChannel } from '../ws/handlers.js';

/**
 * Terminals across server nodes (issue 12). A session lives on the node that holds its agent's
 * socket (the "agent node"): its state, scrollback ring, recording, database row and audit, as on
 * one node. A console on another node (the "console node") reaches it through two node-addressed
 * kinds (server/cluster/node-link.ts), each in order from one node to another:
 *
 *   term.from-console  console node → agent node: a console's term.* message, its keystrokes
 *                      (binary part), or that the console is gone
 *   term.to-console    agent node → console node: a message for the console, or output (binary)
 *
 * On the agent node a remote console is a `RemoteConsole`, a ConsoleChannel like a local socket,
 * so the service, its checks, its flow control and its audit treat it as any console. Output
 * reaches the console only as the session sends it, and the console's acks travel back the same
 * way, so the agent's watermarks bound every hop (agent node → NATS → console node → browser),
 * and a watcher too far behind is dropped as on one node.
 *
 * Node loss: every NODE_CHECK_MS each side looks at the node registry; a console node gone for two
 * looks is a closed socket for its consoles (their shells wait for the detach timeout), an agent
 * node gone ends its sessions on the consoles with a clear reason (the agent's shells ended with
 * its socket; the next start of that node, or the session listing, closes the rows).
 */

const FROM_CONSOLE = 'term.from-console';
const TO_CONSOLE = 'term.to-console';
/** How often the node registry is looked at for nodes that are gone. */
const NODE_CHECK_MS = 2000;
/** Opening a session on another node waits this long for its answer (database insert and audit there). */
const REMOTE_OPEN_TIMEOUT_MS = 20_000;

/** Console messages that may cross to the agent node. */
type Forwardable = ConsoleMessage<'term.open' | 'term.attach' | 'term.detach' | 'term.resize' | 'term.close' | 'term.ack'>;

interface FromConsole {
  /** The console's channel id on its node. */
  c: number;
  /** Its principal and address (sent with every control message; the agent node trusts its peers). */
  p?: Principal;
  ip?: string | null;
  /** A console message. */
  m?: Forwardable;
  /** Keystrokes for this session (the binary part). */
  s?: string;
  /** The console's socket closed; `ended`: because its credentials ended. */
  gone?: { ended: boolean };
}

interface ToConsole {
  c: number;
  m?: ServerToConsole;
  /** Output frame (binary part): its send options. */
  k?: string | null;
  b?: boolean;
}

/** What the agent node's service does with a remote console (TerminalService). */
export interface TerminalTarget {
  open(ch: ConsoleChannel, m: ConsoleMessage<'term.open'>, allocated?: (sessionId: string) => void): Promise<void>;
  attach(ch: ConsoleChannel, m: ConsoleMessage<'term.attach'>): void;
  detachRequest(ch: ConsoleChannel, sessionId: string): void;
  resize(ch: ConsoleChannel, m: ConsoleMessage<'term.resize'>): void;
  closeRequest(ch: ConsoleChannel, sessionId: string): void;
  ack(ch: ConsoleChannel, m: ConsoleMessage<'term.ack'>): void;
  input(ch: ConsoleChannel, sessionId: string, data: Uint8Array): void;
}

let nextProxyId = 0;

/** Whether a console is one of another node (its messages are never sent on to a third node). */
export function isRemoteConsole(ch: ConsoleChannel): boolean {
  return ch instanceof RemoteConsole;
}

/** A console on another node, as the agent node's service sees it. */
class RemoteConsole implements ConsoleChannel {
  /** Negative: never the id of a local socket. */
  readonly id = --nextProxyId;
  principal: Principal;
  remoteAddress: string | null;
  sessionEnded = false;
  private readonly closers: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly remote: RemoteTerminals,
    readonly node: string,
    readonly remoteId: number,
    principal: Principal,
    ip: string | null,
  ) {
    this.principal = principal;
    this.remoteAddress = ip;
  }

  send(msg: ServerToConsole): boolean {
    if (this.closed) return false;
    return this.remote.toConsole(this.node, { c: this.remoteId, m: msg });
  }

  sendBinary(buf: Uint8Array, opts?: SendOpts): boolean {
    if (this.closed) return false;
    return this.remote.toConsole(this.node, { c: this.remoteId, k: opts?.key ?? null, b: opts?.bulk === true }, buf);
  }

  /** Flow control bounds what is in flight to it (the session's acks); nothing queues here. */
  bufferedAmount(): number {
    return 0;
  }

  close(): void {
    this.gone(false);
  }

  onClose(fn: () => void): void {
    if (this.closed) fn();
    else this.closers.push(fn);
  }

  /** Its socket closed on its node (or the node is gone): runs the close handlers once. */
  gone(ended: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.sessionEnded = ended;
    for (const fn of this.closers.splice(0)) fn();
  }
}

/** Both halves of the cross-node terminal path on one node (see the file comment). */
export class RemoteTerminals {
  /** Agent node: remote consoles by `node/id`. */
  private readonly proxies = new Map<string, RemoteConsole>();
  /** Console node: local consoles attached to sessions on other nodes, and which node each is on. */
  private readonly routes = new Map<ConsoleChannel, Map<string, string>>();
  /** Console node: local consoles by id, for what comes back. */
  private readonly consoles = new Map<number, ConsoleChannel>();
  private readonly missing = new Set<string>();
  private readonly unsubs: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly core: Core,
    private readonly target: TerminalTarget,
  ) {}

  private get link() {
    return this.core.nodes.link;
  }
  private get self() {
    return this.core.nodes.link.nodeId;
  }

  start(): void {
    this.unsubs.push(this.link.handle(FROM_CONSOLE, (meta, data, from) => this.fromConsole(meta as FromConsole, data, from)));
    this.unsubs.push(this.link.handle(TO_CONSOLE, (meta, data, from) => this.deliver(meta as ToConsole, data, from)));
    if (this.core.nodes.enabled) {
      this.timer = setInterval(() => this.checkNodes(), NODE_CHECK_MS);
      this.timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.timer);
    for (const u of this.unsubs.splice(0)) u();
  }

  /* ---------------- console node ---------------- */

  /** The node holding the agent's socket when it is another node (a term.open goes there). */
  agentElsewhere(agentId: string): string | null {
    const node = this.core.nodes.agentNode(agentId);
    return node && node !== this.self ? node : null;
  }

  /** The other node a local console reaches `sessionId` on, if it does. */
  routeOf(ch: ConsoleChannel, sessionId: string): string | null {
    return this.routes.get(ch)?.get(sessionId) ?? null;
  }

  private route(ch: ConsoleChannel, sessionId: string, node: string): void {
    let r = this.routes.get(ch);
    if (!r) this.routes.set(ch, (r = new Map()));
    r.set(sessionId, node);
  }

  private unroute(ch: ConsoleChannel, sessionId: string): void {
    const r = this.routes.get(ch);
    r?.delete(sessionId);
  }

  /** Registers a local console that talks to other nodes (once): its close goes to every node it used. */
  private known(ch: ConsoleChannel, node: string): void {
    if (!this.consoles.has(ch.id)) {
      this.consoles.set(ch.id, ch);
      const nodes = new Set<string>();
      this.used.set(ch, nodes);
      ch.onClose(() => {
        this.consoles.delete(ch.id);
        this.routes.delete(ch);
        for (const n of this.used.get(ch) ?? []) this.link.send(n, FROM_CONSOLE, { c: ch.id, gone: { ended: ch.sessionEnded === true } } satisfies FromConsole);
        this.used.delete(ch);
      });
    }
    this.used.get(ch)?.add(node);
  }
  private readonly used = new Map<ConsoleChannel, Set<string>>();

  /** Sends a console's term.* message to the agent node. False when it cannot go (then the caller answers). */
  forward(ch: ConsoleChannel, node: string, m: Forwardable): boolean {
    this.known(ch, node);
    return this.link.send(node, FROM_CONSOLE, { c: ch.id, p: ch.principal, ip: ch.remoteAddress ?? null, m } satisfies FromConsole);
  }

  /** Opens a session on the agent's node; resolves with its id once allocated there (null: refused, the console was told). */
  async open(ch: ConsoleChannel, node: string, m: ConsoleMessage<'term.open'>): Promise<string | null> {
    this.known(ch, node);
    const r = (await this.link.request(
      node,
      FROM_CONSOLE,
      { c: ch.id, p: ch.principal, ip: ch.remoteAddress ?? null, m } satisfies FromConsole,
      undefined,
      REMOTE_OPEN_TIMEOUT_MS,
    )) as { sessionId?: string | null } | null;
    const id = r?.sessionId ?? null;
    if (id) this.route(ch, id, node);
    return id;
  }

  /** Keystrokes for a session on another node. */
  input(ch: ConsoleChannel, node: string, sessionId: string, data: Uint8Array): void {
    this.link.send(node, FROM_CONSOLE, { c: ch.id, s: sessionId } satisfies FromConsole, data);
  }

  /** What the agent node sends a local console: messages in order with output, and the routes they imply. */
  private deliver(t: ToConsole, data: Uint8Array, from: string): void {
    const ch = this.consoles.get(t.c);
    if (!ch) {
      // The console is gone: say so, so the agent node stops sending (its shells wait for a reattach).
      if (t.m?.type === 'term.opened' || data.length > 0) this.link.send(from, FROM_CONSOLE, { c: t.c, gone: { ended: false } } satisfies FromConsole);
      return;
    }
    if (!t.m) {
      ch.sendBinary(data, { bulk: t.b === true, key: t.k ?? null });
      return;
    }
    if (t.m.type === 'term.opened') this.route(ch, t.m.sessionId, from);
    else if (t.m.type === 'term.closed') this.unroute(ch, t.m.sessionId);
    ch.send(t.m);
  }

  /* ---------------- agent node ---------------- */

  /** Used by RemoteConsole: to the console's node, in order with everything else for it. */
  toConsole(node: string, t: ToConsole, data?: Uint8Array): boolean {
    return this.link.send(node, TO_CONSOLE, t, data);
  }

  private fromConsole(f: FromConsole, data: Uint8Array, from: string): unknown {
    const key = `${from}/${f.c}`;
    if (f.gone) {
      const proxy = this.proxies.get(key);
      this.proxies.delete(key);
      proxy?.gone(f.gone.ended);
      return null;
    }
    let proxy = this.proxies.get(key);
    if (f.s !== undefined) {
      // Keystrokes from a console that never attached here are dropped (as a local one's would be refused).
      if (proxy) this.target.input(proxy, f.s, data);
      return null;
    }
    if (!f.m || !f.p) return null;
    if (!proxy) {
      proxy = new RemoteConsole(this, from, f.c, f.p, f.ip ?? null);
      this.proxies.set(key, proxy);
    } else {
      // The console's node resolved its principal again (a role change): the latest counts.
      proxy.principal = f.p;
    }
    const m = f.m;
    switch (m.type) {
      case 'term.open': {
        let sessionId: string | null = null;
        return this.target.open(proxy, m, (id) => (sessionId = id)).then(() => ({ sessionId }));
      }
      case 'term.attach':
        return this.target.attach(proxy, m);
      case 'term.detach':
        return this.target.detachRequest(proxy, m.sessionId);
      case 'term.resize':
        return this.target.resize(proxy, m);
      case 'term.close':
        return this.target.closeRequest(proxy, m.sessionId);
      case 'term.ack':
        return this.target.ack(proxy, m);
    }
  }

  /** Consoles of nodes gone (two looks in a row) are closed sockets; sessions on nodes gone end on the consoles here. */
  private checkNodes(): void {
    const alive = new Set(this.core.nodes.nodes());
    const seen = new Set<string>();
    for (const p of this.proxies.values()) seen.add(p.node);
    for (const r of this.routes.values()) for (const n of r.values()) seen.add(n);
    const gone: string[] = [];
    for (const n of seen) {
      if (alive.has(n)) this.missing.delete(n);
      else if (this.missing.has(n)) gone.push(n);
      else this.missing.add(n);
    }
    for (const n of gone) {
      this.missing.delete(n);
      for (const [key, p] of [...this.proxies]) {
        if (p.node !== n) continue;
        this.proxies.delete(key);
        p.gone(false);
      }
      for (const [ch, r] of this.routes) {
        for (const [sessionId, node] of [...r]) {
          if (node !== n) continue;
          r.delete(sessionId);
          ch.send({ type: 'term.closed', sessionId, reason: `server node ${n} is gone (its agents reconnect to other nodes)`, exitCode: null });
        }
      }
      this.core.log.warn({ node: n }, 'server node gone: its terminal consoles and sessions are ended here');
    }
  }
}
