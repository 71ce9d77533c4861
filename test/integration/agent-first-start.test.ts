/**
 * A new operator's first hour with the agent: it says why it cannot connect at the default log
 * level (refused, 401, TLS verification), names itself when it connects, and several agents on
 * one host do not collide on the health port. The server's banner shows the scheme it speaks.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, cleanup, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const lines = (out: string) =>
  out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });

describe('agent first start', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer();
  });
  afterAll(cleanup);

  it('a closed port: the agent logs "connection refused" at the default level, once per reason', async () => {
    const port = await closedPort();
    const a = startAgent({ wsUrl: `ws://127.0.0.1:${port}`, enrollToken: 'x'.repeat(20) });
    await waitFor(() => /connection refused by 127\.0\.0\.1:\d+/.test(a.output()), 'refused reason in the log', 30_000);
    const l = lines(a.output()).find((x) => String(x['msg']).includes('connection refused'))!;
    expect(l['level']).toBe('warn');
    expect(l['code']).toBe('ECONNREFUSED');
    // Retries with the same reason are not repeated at warn (they are at debug).
    const d = startAgent({ wsUrl: `ws://127.0.0.1:${port}`, enrollToken: 'x'.repeat(20) }, { args: ['--log-level', 'debug'] });
    await waitFor(() => lines(d.output()).filter((x) => String(x['msg']).includes('connection refused')).length >= 3, 'three refused attempts', 30_000);
    expect(lines(d.output()).filter((x) => x['level'] === 'warn' && String(x['msg']).includes('refused'))).toHaveLength(1);
  });

  it('a wrong enrollment token: the agent logs the 401 and what to do', async () => {
    const a = startAgent(s, { token: 'wrong-token-wrong-token' });
    await waitFor(() => a.output().includes('HTTP 401'), '401 reason in the log', 30_000);
    expect(a.output()).toMatch(/server refused our credentials \(HTTP 401 Unauthorized\): the enrollment token is wrong or expired/);
    expect(a.output()).not.toContain('wrong-token-wrong-token');
  });

  it('"connected" names the agent and its id; --health-port 0 picks free ports that do not collide', async () => {
    const a = startAgent(s, { name: 'first-start-a', args: ['--health-port', '0'] });
    const b = startAgent(s, { name: 'first-start-b', args: ['--health-port=0'] });
    const ida = await agentId(a);
    await waitFor(() => a.output().includes('connected as'), 'a connected', 30_000);
    const c = lines(a.output()).find((x) => String(x['msg']).startsWith('connected as'))!;
    expect(c).toMatchObject({ level: 'info', name: 'first-start-a', agentId: ida });
    expect(c['msg']).toBe(`connected as "first-start-a" (${ida})`);
    const port = async (x: typeof a) =>
      Number((await waitFor(() => lines(x.output()).find((l) => String(l['msg']).startsWith('health endpoint on')), 'health port logged'))['port']);
    const [pa, pb] = [await port(a), await port(b)];
    expect(pa).toBeGreaterThan(0);
    expect(pb).toBeGreaterThan(0);
    expect(pa).not.toBe(pb);
    const h = await fetch(`http://127.0.0.1:${pb}/health`);
    expect(h.status).toBe(200);

    // A third agent asking for a port the first holds: warns and runs on without the endpoint.
    const t = startAgent(s, { name: 'first-start-taken', args: ['--health-port', String(pa)] });
    await waitFor(() => t.output().includes(`health port ${pa} is in use`), 'port-in-use warning', 30_000);
    await waitFor(() => t.output().includes('connected as'), 'still connects', 30_000);
    expect(t.proc.exitCode).toBeNull();
  });

  it('under TLS the banner shows https and an agent without the CA logs the verification failure', async () => {
    const dir = tmpDir('tls');
    const cert = path.join(dir, 'c.pem');
    const key = path.join(dir, 'k.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        cert,
      ],
      { stdio: 'ignore' },
    );
    const t = await startServer({ env: { MUSTER_TLS_CERT: cert, MUSTER_TLS_KEY: key } });
    expect(t.output()).toContain(`Muster is running: https://127.0.0.1:${t.port}`);
    const a = startAgent({ wsUrl: `wss://127.0.0.1:${t.port}`, enrollToken: t.enrollToken });
    await waitFor(() => a.output().includes('TLS verification failed'), 'TLS reason in the log', 30_000);
    expect(a.output()).toMatch(/TLS verification failed for 127\.0\.0\.1:\d+: .*--ca-file/);
    // With the CA it connects.
    const ok = startAgent({ wsUrl: `wss://127.0.0.1:${t.port}`, enrollToken: t.enrollToken }, { args: ['--ca-file', cert] });
    await waitFor(() => ok.output().includes('connected as'), 'connects with the CA', 30_000);
  });
});
