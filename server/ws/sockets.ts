import type { IncomingMessage, Server } from 'node:http';
import client from 'prom-client';
import type { WebSocketServer } from 'ws';
import type { Core } from '../core.js';
import { AgentLink, type AgentLinkDeps } from './agent-link.js';
import { Pinger } from './pinger.js';
import type { ConsoleHub } from './console-hub.js';
import { ConsoleLink } from './console-link.js';
import type { AgentBinaryHandlers, AgentHandlers, ConsoleBinaryHandlers, ConsoleHandlers } from './handlers.js';
import { attachUpgrade } from './upgrade.js';

/** The socket layer: both WebSocket endpoints, refused (503) until `accept` and again after `drain`. */
export interface Sockets {
  /** Upgrades are served from now on (the fleet is loaded: a known agent never meets an empty registry). */
  accept(): void;
  /** New upgrades get 503 + Retry-After again (shutting down). */
  drain(): void;
  /**
   * Waits until every socket has closed (their close frames went out before), at most `graceMs`,
   * then cuts the rest: a slow or frozen peer must not hold the shutdown, or the restart of a
   * large fleet, for as long as it likes.
   */
  close(graceMs: number): Promise<void>;
}

export interface SocketDeps {
  hub: ConsoleHub;
  agentHandlers: AgentHandlers;
  agentBinary: AgentBinaryHandlers;
  consoleHandlers: ConsoleHandlers;
  consoleBinary: ConsoleBinaryHandlers;
  /** Replies the server is owed (exempt from the agent message rate); see AgentLinkDeps.expected. */
  expected: NonNullable<AgentLinkDeps['expected']>;
  /** Client address of a request (X-Forwarded-For only from MUSTER_TRUST_PROXY peers). */
  remoteOf(req: IncomingMessage): string | null;
}

/** Attaches /ws/agent and /ws/console to `server`, with every limit from the config. */
export function attachSockets(server: Server, core: Core, d: SocketDeps): Sockets {
  const { config, auth, audit, fleet, log, metrics } = core;
  let accepting = false;
  let draining = false;
  const pinger = new Pinger(config.agentPingIntervalMs, config.agentPingRate);
  // One deps object for every agent link (a large fleet is tens of thousands of links).
  const linkDeps: AgentLinkDeps = {
    fleet,
    audit,
    log,
    metrics,
    handlers: d.agentHandlers,
    binary: d.agentBinary,
    expected: d.expected,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    helloTimeoutMs: config.helloTimeoutMs,
    maxInvalidMessages: config.maxInvalidMessages,
    messageRate: config.agentMessageRate,
    messageBurst: config.agentMessageBurst,
    pinger,
    bulkWriteThreshold: config.bulkWriteThreshold,
    bulkWindow: config.bulkWindow,
  };
  const { agentWss, consoleWss, admission } = attachUpgrade(server, {
    auth,
    audit,
    fleet,
    log,
    metrics,
    enrollment: core.enrollment,
    agentMaxPayload: config.agentMaxPayload,
    consoleMaxPayload: config.consoleMaxPayload,
    agentConnectRate: config.agentConnectRate,
    anonConnectRate: config.anonConnectRate,
    anonConnectRatePerAddress: config.anonConnectRatePerAddress,
    anonConnectMaxAddresses: config.anonConnectMaxAddresses,
    agentConnectsPendingMax: config.agentConnectsPendingMax,
    publicUrl: config.publicUrl,
    remoteOf: d.remoteOf,
    draining: () => draining || !accepting,
    ...(core.nodes.enabled ? { enrollmentOpenElsewhere: (id: string) => core.enrollments.openElsewhere(id) } : {}),
    onAgent: (ws, remote, a, ticket) => {
      new AgentLink(ws, remote, a, linkDeps, ticket);
    },
    onConsole: (ws, req, principal) => {
      metrics.consoles.inc();
      const link = new ConsoleLink(ws, principal, {
        remoteAddress: d.remoteOf(req),
        isStale: (p) => auth.isStale(p),
        recheck: (p) => auth.stillValid(p),
        recheckIntervalMs: config.socketRecheckSec * 1000,
        log,
        metrics,
        handlers: d.consoleHandlers,
        binary: d.consoleBinary,
        maxInvalidMessages: config.maxInvalidMessages,
        softBufferLimit: config.consoleSoftBufferBytes,
        hardBufferLimit: config.consoleHardBufferBytes,
        bulkWriteThreshold: config.bulkWriteThreshold,
        bulkWindow: config.bulkWindow,
        messageRate: config.consoleMessageRate,
        messageBurst: config.consoleMessageBurst,
        auditRateLimited: (l) =>
          void audit
            .record({
              actor: { username: l.principal.username, role: l.principal.role, ip: l.remoteAddress },
              action: 'console.rate_limited',
              ok: false,
              details: { rate: config.consoleMessageRate, burst: config.consoleMessageBurst },
            })
            .catch((err: unknown) => log.error({ err }, 'could not audit a console rate limit')),
      });
      d.hub.add(link);
      link.send({ type: 'ready', user: { id: principal.id, username: principal.username, role: principal.role }, serverTime: Date.now() });
    },
  });
  new client.Gauge({
    name: 'muster_agent_handshakes_pending',
    help: 'Agent sockets accepted and not yet welcomed (MUSTER_AGENT_CONNECTS_PENDING_MAX sheds above)',
    registers: [metrics.registry],
    collect() {
      this.set(admission.pending);
    },
  });
  return {
    accept: () => void (accepting = true),
    drain: () => void (draining = true),
    async close(graceMs) {
      pinger.stop();
      const t0 = Date.now();
      await allClosed([agentWss, consoleWss], graceMs);
      log.debug({ ms: Date.now() - t0, left: agentWss.clients.size + consoleWss.clients.size }, 'shutdown: terminating sockets that did not close');
      for (const ws of [...agentWss.clients, ...consoleWss.clients]) ws.terminate();
    },
  };
}

/**
 * Closes `servers` (a late upgrade is answered 503) and resolves once each has said `close` (its
 * last client closed), or after `ms`, whichever is first. One listener per server rather than one
 * listener and promise per socket: at 20,000 agents those cost ≈ 0.4 s of the shutdown's CPU.
 */
async function allClosed(servers: WebSocketServer[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  // The callback runs on `close` (with an error if that server had already closed: also done).
  await Promise.race([Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))), deadline]);
  clearTimeout(timer);
}
