import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface HealthSource {
  connected(): boolean;
  /** ms since the server was last reachable. */
  unreachableForMs(): number;
  lastError(): string | null;
  counters(): Record<string, number>;
}

/**
 * Local health endpoint on 127.0.0.1: GET /health (200 connected, 503 with the reason once the
 * server has been unreachable longer than the threshold), GET /metrics (own counters, Prometheus text).
 */
export function startHealth(
  port: number, stateDir: string, thresholdMs: number, src: HealthSource,
  onError: (e: Error) => void, onListening: (port: number) => void = () => {},
): http.Server | null {
  if (port < 0) return null;
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      const down = src.unreachableForMs();
      const ok = src.connected() || down < thresholdMs;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok
        ? { status: src.connected() ? 'connected' : 'reconnecting' }
        : { status: 'unreachable', reason: `server unreachable for ${Math.round(down / 1000)} s${src.lastError() ? `: ${src.lastError()}` : ''}` }));
      return;
    }
    if (req.url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(Object.entries(src.counters()).map(([k, v]) => `muster_agent_${k} ${v}`).join('\n') + '\n');
      return;
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
