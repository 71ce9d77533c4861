/**
 * Foundation: the agent upgrade gate and the message gate. Crafted traffic comes from raw `ws`
 * clients holding a real agent's credentials (read from its state dir).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExecOutput } from '../../protocol/frames.js';
import { Api, agentId, cleanup, databases, startAgent, startServer, waitFor, type TestAgent, type TestServer } from '../helpers/harness.js';
import { helloAgent, helloFor, rawAgent, readCreds, sampleMetrics, scrape, upgradeStatus, withDb } from '../helpers/raw-agent.js';

const dbs = await databases();
const MAX_PAYLOAD = 64 * 1024;

describe.each(dbs)('foundation security (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  /** A real agent that enrolled, then stopped: its credentials drive the raw clients. */
  let donor: TestAgent;
  let creds: { agentId: string; secret: string };
  const countAgents = () => withDb(s.dbUrl, async (k) => Number((await k('agents').count({ n: '*' }))[0]!.n));

  beforeAll(async () => {
    s = await startServer({ db, env: { MUSTER_AGENT_MAX_PAYLOAD: String(MAX_PAYLOAD), MUSTER_HELLO_TIMEOUT_MS: '1000', MUSTER_MAX_INVALID_MESSAGES: '12' } });
    api = await Api.login(s.url);
    donor = startAgent(s, { name: 'donor' });
    await api.waitAgent(await agentId(donor), 'online');
    await donor.stop();
    creds = readCreds(donor.stateDir);
  });
  afterAll(cleanup);

  it('wrong enrollment token, missing or wrong secret: 401 at the upgrade, nothing stored', async () => {
    const before = await countAgents();
    const fresh = randomUUID();
    const cases: Record<string, string>[] = [
      { 'X-Muster-Agent-Id': fresh, 'X-Muster-Enroll-Token': 'wrong-token-wrong-token' },
      { 'X-Muster-Agent-Id': fresh },
      { 'X-Muster-Agent-Id': creds.agentId, Authorization: 'Bearer not-the-secret' },
      { 'X-Muster-Agent-Id': creds.agentId },
      // A known agent cannot be taken over with the enrollment token alone.
      { 'X-Muster-Agent-Id': creds.agentId, 'X-Muster-Enroll-Token': s.enrollToken },
      { 'X-Muster-Agent-Id': '../../etc/passwd', 'X-Muster-Enroll-Token': s.enrollToken },
      {},
    ];
    for (const h of cases) {
      const r = await upgradeStatus(s.wsUrl, h);
      expect(r.status, JSON.stringify(h)).toBe(401);
      expect(JSON.parse(r.body).error.code).toBe('unauthorized');
    }
    expect(await countAgents()).toBe(before);
    expect((await api.get(`/api/agents/${fresh}`)).status).toBe(404);
    // A real agent with a wrong token keeps retrying and is never stored.
    const bad = startAgent(s, { name: 'bad-token', token: 'definitely-not-the-token' });
    const badId = await agentId(bad);
    await waitFor(() => bad.output().includes('server refused our credentials'), 'agent to log the refusal');
    expect(bad.proc.exitCode).toBeNull();
    expect((await api.get(`/api/agents/${badId}`)).status).toBe(404);
    expect(await countAgents()).toBe(before);
    const m = await scrape(s.url);
    expect(m.get('muster_upgrades_rejected_total{channel="agent",status="401"}')).toBeGreaterThanOrEqual(cases.length);
    await bad.stop();
  });

  it('enrollment with a valid token but no hello stores nothing; the hello deadline closes it (4001)', async () => {
    const before = await countAgents();
    const a = await rawAgent(s.wsUrl, { agentId: randomUUID(), enrollToken: s.enrollToken });
    expect((await a.closed).code).toBe(4001);
    expect(await countAgents()).toBe(before);
  });

  it('a hello claiming another agent id is refused (4002) and audited; nothing changes', async () => {
    const victim = startAgent(s, { name: 'victim' });
    const victimId = await agentId(victim);
    await api.waitAgent(victimId, 'online');
    const a = await rawAgent(s.wsUrl, creds);
    a.send(helloFor(victimId, { name: 'impostor' }));
    const err = await a.next((m) => m.type === 'error');
    expect(err.code).toBe('forbidden');
    expect((await a.closed).code).toBe(4002);
    const v = (await api.get(`/api/agents/${victimId}`)).body;
    expect(v).toMatchObject({ name: 'victim', status: 'online' });
    expect((await api.get(`/api/agents/${creds.agentId}`)).body.status).toBe('offline');
    const audit = (await api.get('/api/audit?action=agent.identity_mismatch')).body;
    expect(audit.items.some((r: any) => r.targetId === victimId && r.actor === `agent:${creds.agentId}` && r.ok === false)).toBe(true);
    await victim.stop();
  });

  it('nothing but hello is accepted first; then invalid and unknown messages get an error and the socket stays up', async () => {
    const a = await rawAgent(s.wsUrl, creds);
    a.send({ type: 'heartbeat', metrics: sampleMetrics() });
    expect((await a.next((m) => m.type === 'error')).message).toMatch(/first message must be hello/);
    expect((await api.get(`/api/agents/${creds.agentId}`)).body.status).toBe('offline');
    a.send(helloFor(creds.agentId));
    await a.next((m) => m.type === 'welcome');
    await api.waitAgent(creds.agentId, 'online');
    const crafted: [string | Buffer, string, boolean][] = [
      ['{"type":"__proto__"}', 'unknown_type', false],
      ['{"type":"constructor","x":1}', 'unknown_type', false],
      ['{"type":"toString"}', 'unknown_type', false],
      ['{"type":"hasOwnProperty"}', 'unknown_type', false],
      ['{"__proto__":{"type":"heartbeat"}}', 'unknown_type', false],
      ['{"type":"no.such.thing"}', 'unknown_type', false],
      ['not json at all', 'invalid_message', false],
      ['null', 'unknown_type', false],
      ['{"type":"heartbeat","metrics":{"cpuPercent":"lots"}}', 'invalid_message', false],
      [Buffer.from([0x7f, 1, 2, 3]), 'invalid_message', true],
    ];
    // Twelve invalid messages are allowed here (MUSTER_MAX_INVALID_MESSAGES=12); one was spent above.
    for (const [i, [data, code, bin]] of crafted.entries()) {
      a.sendRaw(data, bin);
      const e = await a.next((m) => m.type === 'error', `error for crafted #${i}`);
      expect(e.code, String(data)).toBe(code);
    }
    expect(a.isOpen()).toBe(true);
    a.send({ type: 'heartbeat', metrics: sampleMetrics(77.5) });
    await waitFor(async () => (await api.get(`/api/agents/${creds.agentId}`)).body.metrics?.cpuPercent === 77.5, 'heartbeat after errors');
    a.sendRaw('{"type":"__proto__"}');
    await a.next((m) => m.type === 'error');
    expect(a.isOpen()).toBe(true);
    // The thirteenth invalid message exceeds the limit: a peer that keeps sending garbage is cut off.
    a.sendRaw('{"type":"constructor"}');
    expect((await a.closed).code).toBe(4000);
    await api.waitAgent(creds.agentId, 'offline');
    const row = await waitFor(async () => {
      const r = (await api.get(`/api/agents/${creds.agentId}/connections?limit=1`)).body.items[0];
      return r?.disconnectedAt ? r : null;
    }, 'closed row');
    expect(row.reason).toBe('protocol error');
    // A fresh socket starts with a clean slate.
    const b = await helloAgent(s.wsUrl, creds);
    b.sendRaw('{"type":"__proto__"}');
    expect((await b.next((m) => m.type === 'error')).code).toBe('unknown_type');
    b.send({ type: 'heartbeat', metrics: sampleMetrics(33) });
    await waitFor(async () => (await api.get(`/api/agents/${creds.agentId}`)).body.metrics?.cpuPercent === 33, 'heartbeat after errors');
    expect((await api.get(`/api/agents/${creds.agentId}`)).body.status).toBe('online');
    const m = await scrape(s.url);
    expect(m.get('muster_socket_message_errors_total{channel="agent",code="unknown_type"}')).toBeGreaterThanOrEqual(5);
    b.close();
    await b.closed;
    await api.waitAgent(creds.agentId, 'offline');
  });

  it('hello negotiates min(protocol); unknown hello fields are tolerated (new fields are optional)', async () => {
    const a = await rawAgent(s.wsUrl, creds);
    a.send(helloFor(creds.agentId, { protocol: 99, someFutureField: { x: 1 } }));
    const w = await a.next((m) => m.type === 'welcome' || m.type === 'error');
    expect(w).toMatchObject({ type: 'welcome', protocol: 1, agentId: creds.agentId });
    expect(w.secret).toBeUndefined();
    expect(w.heartbeatIntervalMs).toBeGreaterThan(0);
    a.close();
    await a.closed;
    await api.waitAgent(creds.agentId, 'offline');
  });

  it('an oversized frame closes that socket only (1009); other agents stay online', async () => {
    const bystander = startAgent(s, { name: 'bystander' });
    const bId = await agentId(bystander);
    await api.waitAgent(bId, 'online');
    const a = await helloAgent(s.wsUrl, creds);
    await api.waitAgent(creds.agentId, 'online');
    a.sendRaw(encodeExecOutput('x', 'stdout', 0, new Uint8Array(MAX_PAYLOAD + 1)) as Buffer, true);
    expect((await a.closed).code).toBe(1009);
    await api.waitAgent(creds.agentId, 'offline');
    expect((await api.get(`/api/agents/${bId}`)).body.status).toBe('online');
    // The bystander keeps heartbeating on its socket.
    const seen = Date.parse((await api.get(`/api/agents/${bId}`)).body.lastSeenAt);
    await waitFor(async () => Date.parse((await api.get(`/api/agents/${bId}`)).body.lastSeenAt) > seen, 'bystander heartbeat', 15_000);
    expect(bystander.output()).not.toContain('disconnected from server');
    await bystander.stop();
  });

  it('a revoked agent is disconnected and cannot reconnect', async () => {
    const a = startAgent(s, { name: 'revoke-me' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const r = await api.delete(`/api/agents/${id}`);
    expect(r.status).toBe(204);
    await api.waitAgent(id, 'offline');
    // Presence (memory) goes offline first; the row is closed by the next group commit.
    const rows = await waitFor(async () => {
      const items = (await api.get(`/api/agents/${id}/connections`)).body.items;
      return items[0]?.disconnectedAt ? items : null;
    }, 'closed connection row');
    expect(rows[0].reason).toBe('revoked');
    const v = (await api.get(`/api/agents/${id}`)).body;
    expect(v.revoked).toBe(true);
    // It keeps trying (as systemd would keep it running) and is refused every time.
    await waitFor(() => (a.output().match(/server refused our credentials/g) ?? []).length >= 2, 'refused reconnects');
    expect((await api.get(`/api/agents/${id}`)).body.status).toBe('offline');
    expect((await upgradeStatus(s.wsUrl, { 'X-Muster-Agent-Id': id, Authorization: `Bearer ${readCreds(a.stateDir).secret}` })).status).toBe(401);
    const row = await withDb(s.dbUrl, (k) => k('agents').where({ id }).first('revoked_at'));
    expect(Number(row.revoked_at)).toBeGreaterThan(0);
    expect((await api.get(`/api/agents/${id}/connections`)).body.total).toBe(1);
    await a.stop();
  });
});
