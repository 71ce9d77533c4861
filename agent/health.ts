import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import client from 'prom-client';

/** What the agent tells its local endpoint, read at each request. */
export interface HealthSource {
  agentId: string;
  name: string;
  version: string;
  server: string;
  startedAt: number;
  connected(): boolean;
  /** ms since the server was last reachable. */
  unreachableForMs(): number;
  lastError(): string | null;
  /** When the current connection was welcomed (null while disconnected). */
  connectedSince(): number | null;
  heartbeat(): { intervalMs: number | null; lastSentAt: number | null; lastSentSeq: number | null; lastAckedAt: number | null; lastAckedSeq: number | null };
  /** Live configuration from the server (revision applied, when), for the operator on the host. */
  config(): Record<string, unknown>;
  counters(): Record<string, number>;
  running(): { executions: number; terminals: number };
  /** Re-reads the config and policy files (as SIGHUP); the result is what the operator sees. */
  reload(): { ok: boolean; error?: string; labels?: number; policy?: string };
}

const iso = (ms: number | null): string | null => (ms == null ? null : new Date(ms).toISOString());

/** Loopback peers only (the endpoint binds 127.0.0.1; checked again so a changed bind cannot widen it). */
function fromLoopback(req: http.IncomingMessage): boolean {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('127.') || a === '::1' || a.startsWith('::ffff:127.');
}

/**
 * POST /reload must come from a local tool (curl, a config manager), not from a web page the host's
 * browser shows: browsers send Origin on cross-site POSTs, and a Host other than the loopback
 * address means DNS rebinding. Either is refused.
 */
function localTool(req: http.IncomingMessage): boolean {
  if (req.headers.origin !== undefined) return false;
  const host = (req.headers.host ?? '').replace(/:\d+$/, '');
  return host === '127.0.0.1' || host === 'localhost' || host === '[::1]';
}

/** The agent's own Prometheus registry: counters, state gauges and the process's CPU and memory. */
function createRegistry(src: HealthSource): client.Registry {
  const registry = new client.Registry();
  const registers = [registry];
  // muster_agent_process_cpu_seconds_total, muster_agent_process_resident_memory_bytes, heap, event loop lag, open fds…
  client.collectDefaultMetrics({ register: registry, prefix: 'muster_agent_' });
  const counter = (name: string, help: string) =>
    new client.Counter({
      name: `muster_agent_${name}`,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(src.counters()[name] ?? 0);
      },
    });
  counter('heartbeats_sent_total', 'Heartbeats sent to the server');
  counter('heartbeats_acked_total', 'Heartbeats the server acknowledged');
  counter('connects_total', 'Connections to the server that were welcomed');
  counter('disconnects_total', 'Connections to the server that ended');
  counter('config_applied_total', 'Live configurations from the server applied');
  const gauge = (name: string, help: string, read: () => number) =>
    new client.Gauge({
      name: `muster_agent_${name}`,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge('connected', '1 while connected to the server and welcomed, else 0', () => (src.connected() ? 1 : 0));
  gauge('uptime_seconds', 'Seconds since the agent process started', () => (Date.now() - src.startedAt) / 1000);
  gauge('running_executions', 'Scripts running now', () => src.running().executions);
  gauge('open_terminals', 'Terminal sessions open now', () => src.running().terminals);
  gauge(
    'last_heartbeat_ack_timestamp_seconds',
    'Unix time of the last heartbeat the server acknowledged (0: none yet)',
    () => (src.heartbeat().lastAckedAt ?? 0) / 1000,
  );
  const info = new client.Gauge({ name: 'muster_agent_info', help: 'Agent version (value 1)', labelNames: ['version'], registers });
  info.set({ version: src.version }, 1);
  return registry;
}

/**
 * Local endpoint on 127.0.0.1: GET /health (200 while connected or recently so, 503 with the reason
 * once the server has been unreachable longer than the threshold; agent id, version, uptime,
 * connection state, last heartbeat sent and acknowledged), GET /metrics (Prometheus text with
 * HELP/TYPE: the agent's counters and its own CPU and memory), POST /reload (as SIGHUP).
 */
export function startHealth(
  port: number,
  stateDir: string,
  thresholdMs: number,
  src: HealthSource,
  onError: (e: Error) => void,
  onListening: (port: number) => void = () => {},
): http.Server | null {
  if (port < 0) return null;
  const registry = createRegistry(src);
  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(`${JSON.stringify(body)}\n`);
  };
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (!fromLoopback(req)) return void res.writeHead(403).end();
    if (url === '/health' && (req.method === 'GET' || req.method === 'HEAD')) {
      const down = src.unreachableForMs();
      const connected = src.connected();
      const ok = connected || down < thresholdMs;
      const status = connected ? 'connected' : ok ? 'reconnecting' : 'unreachable';
      const hb = src.heartbeat();
      const since = src.connectedSince();
      return json(res, ok ? 200 : 503, {
        status,
        ...(ok ? {} : { reason: `server unreachable for ${Math.round(down / 1000)} s${src.lastError() ? `: ${src.lastError()}` : ''}` }),
        agentId: src.agentId,
        name: src.name,
        version: src.version,
        uptimeSec: Math.floor((Date.now() - src.startedAt) / 1000),
        startedAt: iso(src.startedAt),
        connection: {
          state: status,
          server: src.server,
          connectedSince: iso(since),
          lastError: src.lastError(),
          unreachableForSec: connected ? 0 : Math.floor(down / 1000),
        },
        heartbeat: {
          intervalMs: hb.intervalMs,
          lastSentAt: iso(hb.lastSentAt),
          lastSentSeq: hb.lastSentSeq,
          lastAckedAt: iso(hb.lastAckedAt),
          lastAckedSeq: hb.lastAckedSeq,
        },
        config: src.config(),
      });
    }
    if (url === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (err: Error) => json(res, 500, { error: err.message }),
      );
      return;
    }
    if (url === '/reload') {
      if (req.method !== 'POST') return void res.writeHead(405, { allow: 'POST' }).end();
      if (!localTool(req)) return json(res, 403, { ok: false, error: 'only local tools may reload the agent (no Origin header, Host 127.0.0.1 or localhost)' });
      req.resume();
      const r = src.reload();
      return json(res, r.ok ? 200 : 422, r);
    }
    res.writeHead(404).end();
  });
  server.on('error', onError);
  server.listen(port, '127.0.0.1', () => {
    const p = (server.address() as AddressInfo).port;
    onListening(p);
    try {
      fs.writeFileSync(path.join(stateDir, 'health.port'), `${p}\n`);
    } catch {
      /* state dir read-only: the port is in the log */
    }
  });
  server.unref();
  return server;
}
