/**
 * Enrollment across server nodes (three real nodes on MariaDB + NATS, a cluster prefix of their
 * own). An enrollment whose welcome (with the secret) was not answered yet is open on the node that
 * holds it: a retry with the token on any node is asked to wait (503 + Retry-After), never told
 * that its credentials are wrong (401). And an agent back on another node with that secret (and its
 * token beside it) keeps its enrollment even when the undo of the open one lands between that
 * node's check of the secret (the upgrade) and its claim of the agent (the hello).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startThreeNodes, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { Api, waitFor } from '../helpers/harness.js';
import { agentHeaders, helloAgent, helloFor, rawAgent, sampleMetrics, upgradeStatus } from '../helpers/raw-agent.js';

const cluster = testCluster();
let n: ThreeNodes;
let api: { a: Api; b: Api; c: Api };

beforeAll(async () => {
  n = await startThreeNodes(cluster);
  api = { a: await Api.login(n.a.url), b: await Api.login(n.b.url), c: await Api.login(n.c.url) };
}, 120_000);

afterAll(async () => {
  await n?.stop();
});

/** An enrollment on node-a whose welcome the agent never answers, known to every node. */
async function openEnrollment(name: string) {
  const t = (await api.a.post('/api/enrollment/tokens', { name, maxUses: 1 })).body;
  const aid = randomUUID();
  const silent = await rawAgent(n.a.wsUrl, { agentId: aid, enrollToken: t.token });
  silent.send(helloFor(aid, { name: 'silent' }));
  const welcome = await silent.next((m) => m.type === 'welcome', 'welcome');
  expect(typeof welcome.secret).toBe('string');
  for (const x of [api.b, api.c]) await waitFor(async () => (await x.get(`/api/agents/${aid}`)).status === 200, 'the agent known on every node');
  const undone = () =>
    waitFor(
      async () => (await api.a.get(`/api/audit?action=agent.enroll&targetId=${aid}`)).body.items.find((r: any) => r.ok === false && r.details?.undone === true),
      'enrollment undone',
      30_000,
    );
  return { t, aid, silent, secret: welcome.secret as string, undone };
}

describe('cluster enrollment', () => {
  it('a token retry while the enrollment is open on another node waits (503) on every node, and enrolls once it is undone', async () => {
    const e = await openEnrollment('open-elsewhere');
    for (const s of [n.a, n.b, n.c]) {
      const r = await upgradeStatus(s.wsUrl, agentHeaders({ agentId: e.aid, enrollToken: e.t.token }));
      expect(r.status, `token retry on ${s.url}`).toBe(503);
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(r.body).toMatch(/enrollment of this agent id still in progress/);
      // Without the token: a known id needs its secret, on every node.
      expect((await upgradeStatus(s.wsUrl, agentHeaders({ agentId: e.aid }))).status).toBe(401);
    }
    e.silent.close();
    expect((await e.undone()).details.undone).toBe(true);
    await waitFor(async () => (await api.b.get(`/api/agents/${e.aid}`)).status === 404, 'the undone agent gone on node-b');
    // The retry enrolls on node-b, with a new secret that works on any node.
    const again = await helloAgent(n.b.wsUrl, { agentId: e.aid, enrollToken: e.t.token }, { name: 'enrolled-on-b' });
    expect(typeof again.welcome.secret).toBe('string');
    expect((await api.c.waitAgent(e.aid, 'online')).name).toBe('enrolled-on-b');
    again.close();
    await api.c.waitAgent(e.aid, 'offline');
    const onC = await helloAgent(n.c.wsUrl, { agentId: e.aid, secret: again.welcome.secret });
    expect(onC.welcome.secret).toBeUndefined();
    onC.close();
  });

  it('the undo on node-a lands between node-b checking the new secret and claiming the agent: the agent keeps that secret', async () => {
    const e = await openEnrollment('undo-vs-claim');
    // Back on node-b with the secret and the token beside it: the upgrade checks the secret.
    const back = await rawAgent(n.b.wsUrl, { agentId: e.aid, secret: e.secret, enrollToken: e.t.token });
    e.silent.close();
    await e.undone();
    expect((await api.a.get('/api/enrollment/tokens')).body.items.find((x: any) => x.id === e.t.id).uses).toBe(0);
    // The claim at hello: no row with that secret any more; the token enrolls it again with it.
    back.send(helloFor(e.aid, { name: 'back-on-b' }));
    const w = await back.next((m) => m.type === 'welcome' || m.type === 'error', 'welcome');
    expect(w.type).toBe('welcome');
    expect(w.secret).toBeUndefined();
    back.send({ type: 'heartbeat', seq: 0, metrics: sampleMetrics() });
    // Every node shows it online (node-a's removal and node-b's online may reach a node in either order).
    for (const x of [api.a, api.b, api.c]) expect((await x.waitAgent(e.aid, 'online')).name).toBe('back-on-b');
    expect((await api.a.get('/api/enrollment/tokens')).body.items.find((x: any) => x.id === e.t.id)).toMatchObject({ uses: 1, state: 'used' });
    back.close();
    await api.c.waitAgent(e.aid, 'offline');
    // The secret works alone, on another node.
    const onC = await helloAgent(n.c.wsUrl, { agentId: e.aid, secret: e.secret });
    expect(onC.welcome.secret).toBeUndefined();
    await api.a.waitAgent(e.aid, 'online');
    onC.close();
  });
});
