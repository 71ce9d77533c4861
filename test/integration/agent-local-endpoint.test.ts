/**
 * The agent's local endpoint (127.0.0.1, --health-port): /health with identity, uptime, connection
 * state and the last heartbeat sent and acknowledged; /metrics in Prometheus text with HELP/TYPE and
 * the agent's own CPU and memory; POST /reload re-reads the config file as SIGHUP does, and only
 * local tools may call it. Real server, real agent.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, startAgent, startServer, tmpDir, waitFor } from '../helpers/harness.js';

/** A raw request (fetch cannot set Host). */
function raw(port: number, method: string, p: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('agent local endpoint', () => {
  afterAll(cleanup);

  it('/health, /metrics and POST /reload', async () => {
    const s = await startServer({ env: { MUSTER_HEARTBEAT_INTERVAL_MS: '500' } });
    const api = await Api.login(s.url);
    const cfgFile = path.join(tmpDir('agent-cfg'), 'agent.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ labels: { role: 'before' } }));
    const a = startAgent(s, { name: 'local-endpoint', args: ['--health-port=0', '--config', cfgFile], env: { MUSTER_AGENT_UNREACHABLE_AFTER_SEC: '2' } });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const portFile = path.join(a.stateDir, 'health.port');
    const port = Number(await waitFor(() => fs.existsSync(portFile) && fs.readFileSync(portFile, 'utf8').trim(), 'health.port'));
    const base = `http://127.0.0.1:${port}`;

    // Heartbeats are acknowledged by the server: both times show up once one round trip is done.
    const h = await waitFor(async () => {
      const r = await fetch(`${base}/health`);
      const b = (await r.json()) as any;
      return r.status === 200 && b.heartbeat.lastAckedAt ? b : null;
    }, 'an acknowledged heartbeat on /health');
    expect(h).toMatchObject({ status: 'connected', agentId: id, name: 'local-endpoint', connection: { state: 'connected', server: s.wsUrl } });
    expect(h.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(h.uptimeSec).toBeGreaterThanOrEqual(0);
    expect(h.heartbeat.intervalMs).toBe(500);
    expect(Date.parse(h.heartbeat.lastSentAt)).toBeGreaterThan(Date.now() - 60_000);
    expect(Date.parse(h.connection.connectedSince)).toBeLessThanOrEqual(Date.parse(h.heartbeat.lastAckedAt));
    expect(h.heartbeat.lastAckedSeq).toBeLessThanOrEqual(h.heartbeat.lastSentSeq);
    // The ack counter moves on as heartbeats keep going.
    const seq0 = h.heartbeat.lastAckedSeq as number;
    await waitFor(async () => ((await (await fetch(`${base}/health`)).json()) as any).heartbeat.lastAckedSeq > seq0, 'a later ack');

    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'muster_agent_heartbeats_sent_total',
      'muster_agent_heartbeats_acked_total',
      'muster_agent_connects_total',
      'muster_agent_connected',
      'muster_agent_uptime_seconds',
      'muster_agent_process_cpu_seconds_total',
      'muster_agent_process_resident_memory_bytes',
    ]) {
      expect(metrics).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
      expect(metrics).toMatch(new RegExp(`^# TYPE ${name} (counter|gauge)$`, 'm'));
    }
    expect(metrics).toMatch(/^muster_agent_connected 1$/m);
    expect(Number(/^muster_agent_process_resident_memory_bytes (\d+)/m.exec(metrics)?.[1])).toBeGreaterThan(10 * 1024 * 1024);
    expect(Number(/^muster_agent_heartbeats_acked_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    // Every third heartbeat asks for an ack (the acks are the agent's proof the server lives; one per
    // three intervals spares the server a write per heartbeat).
    const counts = await waitFor(async () => {
      const t = await (await fetch(`${base}/metrics`)).text();
      const sent = Number(/^muster_agent_heartbeats_sent_total (\d+)/m.exec(t)?.[1]);
      return sent >= 7 ? { sent, acked: Number(/^muster_agent_heartbeats_acked_total (\d+)/m.exec(t)?.[1]) } : null;
    }, 'seven heartbeats');
    expect(counts.acked).toBeLessThanOrEqual(Math.ceil(counts.sent / 3));
    expect(counts.acked).toBeGreaterThanOrEqual(Math.floor(counts.sent / 3) - 1);

    // POST /reload: the config file's new labels reach the server, as after SIGHUP.
    fs.writeFileSync(cfgFile, JSON.stringify({ labels: { role: 'after' } }));
    const r = await fetch(`${base}/reload`, { method: 'POST' });
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ ok: true, labels: 1 });
    await waitFor(async () => (await api.get(`/api/agents/${id}`)).body.labels?.role === 'after', 'labels reloaded on the server');
    // A broken config file: the reload says why and keeps the old settings.
    fs.writeFileSync(cfgFile, '{ not json');
    const bad = await fetch(`${base}/reload`, { method: 'POST' });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as any).error).toMatch(/cannot read config file/);
    expect((await api.get(`/api/agents/${id}`)).body.labels.role).toBe('after');

    // Only local tools: not a GET, not from a web page (Origin), not through DNS rebinding (Host).
    expect((await fetch(`${base}/reload`)).status).toBe(405);
    expect((await raw(port, 'POST', '/reload', { origin: 'http://evil.example' })).status).toBe(403);
    expect((await raw(port, 'POST', '/reload', { host: `evil.example:${port}` })).status).toBe(403);
    expect((await raw(port, 'POST', '/reload', { host: `localhost:${port}` })).status).toBe(422);
    expect(a.output()).toMatch(/"msg":"reload requested on the local endpoint"/);

    // Unreachable: 503 with the reason, and the last ack stays what it was.
    await s.stop();
    const down = await waitFor(
      async () => {
        const x = await fetch(`${base}/health`);
        return x.status === 503 ? ((await x.json()) as any) : null;
      },
      '/health 503',
      90_000,
    );
    expect(down.connection.state).toBe('unreachable');
    expect(down.heartbeat.lastAckedAt).not.toBeNull();
    await a.stop();
  }, 150_000);
});
