import type http from 'node:http';
import { CloseCode } from '../protocol/index.js';
import type { OpenCore } from './core.js';
import { acceptQueueWarning, type Listener } from './http/listener.js';
import type { Logger } from './log.js';
import type { ConsoleHub } from './ws/console-hub.js';
import type { Sockets } from './ws/sockets.js';

export interface RunningServer {
  port: number;
  url: string;
  core: OpenCore['core'];
  /** Admin password when this start created the admin user with a random one. */
  generatedAdminPassword?: string;
  /** MUSTER_ENROLL_TOKEN when set (else enrollment tokens are created in Admin → Enrollment). */
  enrollToken: string | null;
  /** Every route the API router really serves (method, path below /api), for the OpenAPI test. */
  apiRoutes: { method: string; path: string }[];
  /** Stops the server in order (below); the same promise however often it is called. */
  close(): Promise<void>;
}

/** What a capability contributes to the server's lifetime. */
export interface Lifetime {
  start?(): Promise<void>;
  stop?(): Promise<void>;
}

/** The parts the composition root made, as the start and the shutdown need them. */
export interface ServerParts {
  log: Logger;
  listener: Listener;
  opened: OpenCore;
  web: { app: http.RequestListener; apiRoutes(): { method: string; path: string }[] };
  sockets: Sockets;
  hub: ConsoleHub;
  /** Started first (upgrades are refused until the fleet is loaded) and stopped first. */
  fleet: Lifetime;
  /** The other capabilities in start order; stopped in the reverse order, after the fleet. */
  capabilities: readonly Lifetime[];
  /** The agent on this machine (MUSTER_LOCAL_AGENT): started once the server serves, stopped before anything else. */
  localAgent?: { start(): void; stop(): Promise<void> } | undefined;
  generatedAdminPassword?: string | undefined;
}

/** How long shutdown waits for peers to answer their close frames before cutting them. */
const CLOSE_GRACE_MS = 2000;

/** Starts every capability, then serves HTTP and accepts sockets; the answer's `close` stops it all. */
export async function run(p: ServerParts): Promise<RunningServer> {
  for (const cap of [p.fleet, ...p.capabilities]) await cap.start?.();
  // Now that the fleet's size is known: whether a restart's reconnects fit the accept queue.
  const shallow = acceptQueueWarning(p.listener.acceptQueue, p.opened.core.fleet.agents.size);
  if (shallow) p.log.warn({ acceptQueue: p.listener.acceptQueue, agents: p.opened.core.fleet.agents.size }, shallow);
  p.listener.serve(p.web.app);
  p.sockets.accept();
  p.localAgent?.start();
  let closing: Promise<void> | undefined;
  return {
    port: p.listener.port,
    url: p.listener.serverUrl(),
    core: p.opened.core,
    generatedAdminPassword: p.generatedAdminPassword,
    enrollToken: p.opened.core.enrollment.staticToken,
    apiRoutes: p.web.apiRoutes(),
    close: () => (closing ??= shutdown(p)),
  };
}

/**
 * The ordered shutdown, each step awaited (no polling): sockets drained, local agent stopped, the
 * fleet's sockets closed and recorded, consoles told, capabilities stopped newest first, presence
 * flushed, remaining sockets cut after their grace, listener closed, then the core (audit, bus,
 * database).
 */
async function shutdown(p: ServerParts): Promise<void> {
  const { log } = p;
  // Drain first: agents told to go away must not register again with this process (they would
  // be live after the fleet stopped). The listener stays open until the sockets are gone and
  // answers every upgrade 503 + Retry-After: a refused TCP connect would only push each agent's
  // exponential backoff up while the next process starts, and slow the fleet's return.
  p.sockets.drain();
  await p.localAgent?.stop();
  const t0 = Date.now();
  await p.fleet.stop?.();
  p.hub.close(CloseCode.serverShutdown, 'server shutdown');
  for (const cap of [...p.capabilities].reverse()) await cap.stop?.().catch((err: unknown) => log.error({ err }, 'capability stop failed'));
  await p.opened.core.fleet.stop();
  log.debug({ ms: Date.now() - t0 }, 'shutdown: agent sockets closed and recorded');
  await p.sockets.close(CLOSE_GRACE_MS);
  await p.listener.close();
  await p.opened.close();
  log.info({ ms: Date.now() - t0 }, 'shutdown complete');
}
