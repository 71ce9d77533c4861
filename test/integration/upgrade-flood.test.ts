/**
 * Issue 9, defect 4: a flood of agent upgrades with bad or absent credentials must not starve
 * real agents. Known agents with a valid secret draw from their own bucket; anonymous attempts
 * are shed in all and per remote address.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, startAgent, startServer } from '../helpers/harness.js';
import { readCreds, scrape, upgradeStatus } from '../helpers/raw-agent.js';

afterAll(cleanup);

describe('agent upgrade floods', () => {
  it('a real agent reconnects through an anonymous flood from many sockets', async () => {
    const s = await startServer({ env: { MUSTER_AGENT_CONNECT_RATE: '1', MUSTER_ANON_CONNECT_RATE: '5', MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '2' } });
    const api = await Api.login(s.url);
    const first = startAgent(s, { name: 'real' });
    const id = await agentId(first);
    await api.waitAgent(id, 'online', 60_000);
    await first.stop();
    await api.waitAgent(id, 'offline');
    const creds = readCreds(first.stateDir);

    let stop = false;
    const statuses = new Map<number, number>();
    const shapes: Record<string, string>[] = [
      {},
      { 'X-Muster-Agent-Id': randomUUID() },
      { 'X-Muster-Agent-Id': randomUUID(), 'X-Muster-Enroll-Token': 'not-the-enrollment-token' },
      { 'X-Muster-Agent-Id': creds.agentId, Authorization: 'Bearer not-the-secret' },
      { 'X-Muster-Agent-Id': creds.agentId },
    ];
    const flood = Array.from({ length: 20 }, async (_, i) => {
      for (let n = 0; !stop; n++) {
        try {
          const r = await upgradeStatus(s.wsUrl, shapes[(i + n) % shapes.length]!);
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        } catch {
          // A reset under load is part of a flood.
        }
      }
    });
    try {
      // Let the flood drain every bucket, then bring the real agent back (its own state dir, its secret).
      await new Promise((r) => setTimeout(r, 1500));
      const again = startAgent(s, { name: 'real', stateDir: first.stateDir, token: null });
      expect(await agentId(again)).toBe(id);
      await api.waitAgent(id, 'online', 60_000);
    } finally {
      stop = true;
      await Promise.all(flood);
    }
    // The flood was refused (401) and shed (429 per address, 503 in all), never let through.
    expect(statuses.get(101)).toBeUndefined();
    expect((statuses.get(429) ?? 0) + (statuses.get(503) ?? 0)).toBeGreaterThan(0);
    const m = await scrape(s.url);
    expect(m.get('muster_upgrades_rejected_total{channel="agent",status="429"}')).toBeGreaterThan(0);
    expect((await api.get(`/api/agents/${id}`)).body.status).toBe('online');
  }, 180_000);
});
