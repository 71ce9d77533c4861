/**
 * Issue 12: admission sheds before it spends. Above MUSTER_AGENT_CONNECTS_PENDING_MAX agent
 * sockets accepted and not yet welcomed, an agent upgrade is answered 503 + Retry-After before the
 * socket is accepted; a reconnect burst of known agents is spread out and every agent is welcomed
 * in the end, none refused as unauthorized.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Api, cleanup, sleep, startServer } from '../helpers/harness.js';
import { helloAgent, helloFor, scrape, type Creds } from '../helpers/raw-agent.js';

afterAll(cleanup);

type Attempt = { welcomed: WebSocket } | { status: number; retryAfter: string | undefined };

/** One connect as an agent does it: upgrade, hello, wait for welcome; or the refusal's status and Retry-After. */
function connectOnce(wsUrl: string, c: Creds & { secret: string }): Promise<Attempt> {
  const ws = new WebSocket(`${wsUrl}/ws/agent`, {
    headers: { 'X-Muster-Agent-Id': c.agentId, Authorization: `Bearer ${c.secret}` },
    perMessageDeflate: false,
    handshakeTimeout: 30_000,
  });
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined });
      ws.terminate();
    });
    ws.once('open', () => ws.send(JSON.stringify(helloFor(c.agentId))));
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { type: string };
      if (m.type === 'welcome') resolve({ welcomed: ws });
      else if (m.type === 'error') reject(new Error(`refused after the upgrade: ${d.toString()}`));
    });
    ws.once('error', reject);
  });
}

describe('agent connect admission', () => {
  it('a burst above the handshakes-in-progress limit is shed with 503 + Retry-After; every agent is welcomed in the end', async () => {
    const s = await startServer({
      env: {
        MUSTER_AGENT_CONNECTS_PENDING_MAX: '2',
        // Only the handshakes in progress may shed here: the rate budgets are far above the burst.
        MUSTER_AGENT_CONNECT_RATE: '10000',
        MUSTER_ANON_CONNECT_RATE: '10000',
        MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '10000',
      },
    });
    const api = await Api.login(s.url);
    const N = 30;
    // Enrolled one at a time (enrollments are handshakes in progress too).
    const creds: (Creds & { secret: string })[] = [];
    for (let i = 0; i < N; i++) {
      const agentId = randomUUID();
      const a = await helloAgent(s.wsUrl, { agentId, enrollToken: s.enrollToken });
      creds.push({ agentId, secret: a.welcome.secret as string });
      a.close();
      await a.closed;
    }
    for (const c of creds) await api.waitAgent(c.agentId, 'offline');

    // All reconnect at once, each honouring Retry-After as the agent does.
    const statuses = new Map<number, number>();
    const retryAfters: number[] = [];
    const sockets = await Promise.all(
      creds.map(async (c) => {
        for (;;) {
          const r = await connectOnce(s.wsUrl, c);
          if ('welcomed' in r) return r.welcomed;
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          expect(r.status, 'only shed, never refused').toBe(503);
          const ra = Number(r.retryAfter);
          expect(Number.isInteger(ra) && ra >= 1, `Retry-After ${r.retryAfter}`).toBe(true);
          retryAfters.push(ra);
          await sleep(ra * 1000);
        }
      }),
    );
    try {
      expect(statuses.get(503) ?? 0).toBeGreaterThan(0);
      expect(statuses.get(401)).toBeUndefined();
      // Jittered: the shed agents do not all come back in the same second.
      expect(new Set(retryAfters).size).toBeGreaterThan(1);
      for (const c of creds) expect((await api.get(`/api/agents/${c.agentId}`)).body.status).toBe('online');
      const m = await scrape(s.url);
      expect(m.get('muster_upgrades_rejected_total{channel="agent",status="503"}')).toBeGreaterThan(0);
      expect(m.get('muster_upgrades_rejected_total{channel="agent",status="401"}') ?? 0).toBe(0);
      // Every slot was given back (at welcome).
      expect(m.get('muster_agent_handshakes_pending')).toBe(0);
      // Every upgrade (the enrollments, the shed attempts, the reconnects) was timed from its
      // accepted connection, to its request and to its answer.
      const upgrades = 2 * N + [...statuses.values()].reduce((a, b) => a + b, 0);
      expect(m.get('muster_agent_upgrade_seconds_count{stage="request"}')).toBe(upgrades);
      expect(m.get('muster_agent_upgrade_seconds_count{stage="answered"}')).toBe(upgrades);
      expect(m.get('muster_agent_upgrade_seconds_bucket{le="+Inf",stage="answered"}')).toBe(upgrades);
    } finally {
      for (const ws of sockets) ws.close();
    }
  }, 180_000);

  it('a socket that closes after its upgrade and before its welcome gives its slot back', async () => {
    const s = await startServer({ env: { MUSTER_AGENT_CONNECTS_PENDING_MAX: '1' } });
    const agentId = randomUUID();
    const a = await helloAgent(s.wsUrl, { agentId, enrollToken: s.enrollToken });
    const c = { agentId, secret: a.welcome.secret as string };
    a.close();
    await a.closed;
    // Upgraded (the link exists), no hello, then gone: three times over with a limit of one.
    for (let i = 0; i < 3; i++) {
      const ws = new WebSocket(`${s.wsUrl}/ws/agent`, {
        headers: { 'X-Muster-Agent-Id': c.agentId, Authorization: `Bearer ${c.secret}` },
        perMessageDeflate: false,
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
        ws.once('error', reject);
      });
      ws.terminate();
      const deadline = Date.now() + 10_000;
      while ((await scrape(s.url)).get('muster_agent_handshakes_pending') !== 0) {
        if (Date.now() > deadline) throw new Error('the slot of a socket closed before its welcome was never given back');
        await sleep(50);
      }
    }
    const r = await connectOnce(s.wsUrl, c);
    expect('welcomed' in r).toBe(true);
    if ('welcomed' in r) r.welcomed.close();
    expect((await scrape(s.url)).get('muster_agent_handshakes_pending')).toBe(0);
  }, 60_000);

  it('the listening socket gets the accept queue MUSTER_LISTEN_BACKLOG names', async () => {
    // `ss -ltn` shows a listening socket's accept queue limit as Send-Q (capped by net.core.somaxconn).
    const somaxconn = Number(fs.readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim());
    const backlogOf = (port: number): number => {
      const line =
        execFileSync('ss', ['-ltnH', `sport = :${port}`])
          .toString()
          .trim()
          .split('\n')[0] ?? '';
      return Number(line.split(/\s+/)[2]);
    };
    const s = await startServer({ env: { MUSTER_LISTEN_BACKLOG: '37' } });
    expect(backlogOf(s.port)).toBe(Math.min(37, somaxconn));
    await s.stop();
    const d = await startServer();
    expect(backlogOf(d.port)).toBe(Math.min(65535, somaxconn));
    expect(d.output()).not.toContain('the accept queue holds');
  }, 60_000);

  it('a start whose accept queue cannot hold the enrolled fleet says so, naming the variable to raise', async () => {
    const s = await startServer({ env: { MUSTER_LISTEN_BACKLOG: '1' } });
    // A queue of one holds the first agent: nothing to say yet.
    expect(s.output()).not.toContain('the accept queue holds');
    for (let i = 0; i < 2; i++) (await helloAgent(s.wsUrl, { agentId: randomUUID(), enrollToken: s.enrollToken })).close();
    await s.stop();
    const r = await s.restart();
    expect(r.output()).toMatch(/the accept queue holds 1 connections \(MUSTER_LISTEN_BACKLOG\) but 2 agents are enrolled.*raise MUSTER_LISTEN_BACKLOG/);
  }, 60_000);
});
