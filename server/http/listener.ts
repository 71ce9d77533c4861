import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';
import { rejectRequest, rejectUpgrade, retryAfter } from './reject.js';
import { setSecurityHeaders } from './security.js';

/** The listening socket, open before the server is ready, and what it answers meanwhile. */
export interface Listener {
  readonly server: http.Server;
  readonly port: number;
  /** The accept queue asked for (MUSTER_LISTEN_BACKLOG) and the kernel's cap on it (null: not known). */
  readonly acceptQueue: AcceptQueue;
  /** Base URL agents and browsers reach this server at (MUSTER_PUBLIC_URL, else this port on loopback). */
  serverUrl(): string;
  /** The same as a WebSocket URL (agents connect there). */
  agentUrl(): string;
  /** Stops answering upgrades with 503 (the socket layer has taken them over). */
  upgradesTaken(): void;
  /** Stops answering requests with 503 and hands them to `app`. */
  serve(app: http.RequestListener): void;
  /** Closes every connection and the listening socket. */
  close(): Promise<void>;
}

/** The listening socket's accept queue: the length asked for and what the kernel allows (net.core.somaxconn). */
export interface AcceptQueue {
  requested: number;
  /** net.core.somaxconn on Linux (per network namespace); null where it cannot be read. */
  kernelCap: number | null;
}

/** Where Linux says how long a listening socket's accept queue may be, whatever listen() asked for. */
const SOMAXCONN = '/proc/sys/net/core/somaxconn';

function kernelAcceptCap(): number | null {
  try {
    const n = Number(fs.readFileSync(SOMAXCONN, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * What to tell the operator when the accept queue cannot hold the fleet (`agents` enrolled): after
 * a restart every agent connects within seconds, and the connects beyond a full queue lose their
 * SYNs and come back only on TCP's 1, 3, 7, 15 s retransmits, which stretches the fleet's return by
 * as much. Null when the queue is deep enough (or its cap is unknown). As Redis warns about its
 * own backlog, once at start.
 */
export function acceptQueueWarning(q: AcceptQueue, agents: number): string | null {
  const effective = q.kernelCap === null ? q.requested : Math.min(q.requested, q.kernelCap);
  if (agents <= effective) return null;
  const raise = q.kernelCap !== null && q.kernelCap < q.requested;
  return raise
    ? `the accept queue holds ${effective} connections (net.core.somaxconn) but ${agents} agents are enrolled: after a restart, ` +
        `connects beyond it wait for TCP retransmits; raise it (sysctl -w net.core.somaxconn=${Math.min(q.requested, Math.max(65535, agents))}, ` +
        'or install deployment/sysctl-muster-server.conf in /etc/sysctl.d)'
    : `the accept queue holds ${effective} connections (MUSTER_LISTEN_BACKLOG) but ${agents} agents are enrolled: after a restart, ` +
        'connects beyond it wait for TCP retransmits; raise MUSTER_LISTEN_BACKLOG';
}

const STARTING = { status: 503, message: 'server starting' } as const;

/**
 * Listens before the slow part of the start (database, migrations, loading the fleet): until the
 * server is ready every request and upgrade gets 503 + Retry-After. After a restart the fleet then
 * waits the time it is told instead of piling up refused connects (each of which would grow its
 * exponential backoff and stretch the time until every agent is back).
 */
export async function listenEarly(config: Config, log: Logger): Promise<Listener> {
  const server: http.Server =
    config.tlsCert && config.tlsKey ? https.createServer({ cert: fs.readFileSync(config.tlsCert), key: fs.readFileSync(config.tlsKey) }) : http.createServer();
  const starting = (req: http.IncomingMessage, res: http.ServerResponse) => {
    setSecurityHeaders(req, res, config.publicUrl);
    rejectRequest(res, { ...STARTING, headers: retryAfter(2) });
  };
  const startingUpgrade = (_req: http.IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    rejectUpgrade(socket, { ...STARTING, headers: retryAfter(1, 3) });
  };
  server.on('request', starting);
  server.on('upgrade', startingUpgrade);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // MUSTER_LISTEN_BACKLOG (4096): a deep accept queue, as after a restart the whole fleet
    // reconnects within seconds, and SYNs dropped by a short queue come back only after TCP's 1, 3,
    // 7, 15 s retransmits.
    server.listen({ port: config.port, host: config.host, backlog: config.listenBacklog }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After listening, errors are per connection (EMFILE on accept, say): log them, never crash.
  server.on('error', (err) => log.error({ err }, 'server socket error'));
  const port = (server.address() as AddressInfo).port;
  const scheme = config.tlsCert ? 'https' : 'http';
  const serverUrl = () => config.publicUrl?.replace(/\/$/, '') ?? `${scheme}://127.0.0.1:${port}`;
  return {
    server,
    port,
    acceptQueue: { requested: config.listenBacklog, kernelCap: kernelAcceptCap() },
    serverUrl,
    agentUrl: () => serverUrl().replace(/^http/, 'ws'),
    upgradesTaken: () => void server.off('upgrade', startingUpgrade),
    serve: (app) => {
      server.off('request', starting);
      server.on('request', app);
    },
    close: () => {
      // server.close() waits for every accepted socket; the socket layer has ended its own by now.
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
