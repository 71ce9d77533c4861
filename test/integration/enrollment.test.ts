/**
 * Enrollment (issue 9): the agent id is claimed atomically at hello, so a socket that upgraded
 * with the enrollment token while an id was free cannot take over the agent that enrolled with that
 * id meanwhile; enrollment tokens as resources (TTL, uses, labels, revoke, hashed, shown once).
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode } from '../../protocol/errors.js';
import { Api, cleanup, databases, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { agentHeaders, helloAgent, helloFor, rawAgent, sampleMetrics, upgradeStatus, withDb } from '../helpers/raw-agent.js';

const dbs = await databases();

describe.each(dbs)('enrollment (%s)', (db) => {
  let s: TestServer;
  let api: Api;

  beforeAll(async () => {
    s = await startServer({ db });
    api = await Api.login(s.url);
  });
  afterAll(cleanup);

  it('a held enrollment socket cannot take over an id that enrolled meanwhile', async () => {
    const id = randomUUID();
    const held = await rawAgent(s.wsUrl, { agentId: id, enrollToken: s.enrollToken });
    const real = await helloAgent(s.wsUrl, { agentId: id, enrollToken: s.enrollToken }, { name: 'real' });
    expect(typeof real.welcome.secret).toBe('string');
    await api.waitAgent(id, 'online');

    held.send(helloFor(id, { name: 'impostor' }));
    const err = await held.next((m) => m.type === 'error', 'refusal');
    expect(err.code).toBe('conflict');
    expect(err.message).toMatch(/already enrolled/);
    const closed = await held.closed;
    expect(closed.code).toBe(CloseCode.enrollmentRefused);
    expect(closed.reason).toMatch(/already enrolled/);

    // The real agent keeps its socket, its name and its secret.
    expect(real.isOpen()).toBe(true);
    const a = (await api.get(`/api/agents/${id}`)).body;
    expect(a.status).toBe('online');
    expect(a.name).toBe('real');
    real.close();
    await api.waitAgent(id, 'offline');
    const again = await helloAgent(s.wsUrl, { agentId: id, secret: real.welcome.secret });
    expect(again.welcome.secret).toBeUndefined();
    again.close();
    const audit = (await api.get(`/api/audit?action=agent.enroll&targetId=${id}`)).body.items;
    expect(audit.some((r: any) => r.ok === false && /already enrolled/.test(r.details?.reason))).toBe(true);
    expect(audit.some((r: any) => r.ok === true)).toBe(true);
  });

  it('two enrollments of one id racing at hello: exactly one wins', async () => {
    const id = randomUUID();
    const socks = await Promise.all([0, 1, 2].map(() => rawAgent(s.wsUrl, { agentId: id, enrollToken: s.enrollToken })));
    for (const [i, x] of socks.entries()) x.send(helloFor(id, { name: `racer-${i}` }));
    const answers = await Promise.all(socks.map((x) => x.next((m) => m.type === 'welcome' || m.type === 'error', 'answer')));
    expect(answers.filter((m) => m.type === 'welcome').length).toBe(1);
    expect(answers.filter((m) => m.type === 'error' && m.code === 'conflict').length).toBe(2);
    const winner = socks[answers.findIndex((m) => m.type === 'welcome')]!;
    await waitFor(async () => (await api.get(`/api/agents/${id}`)).body.status === 'online', 'winner online');
    expect(winner.isOpen()).toBe(true);
    for (const x of socks) x.close();
  });

  it('enrollment tokens: created by admins with TTL, uses and labels; shown once, stored hashed, listed, revoked, audited', async () => {
    const viewer = await api.userWithRole('viewer');
    const operator = await api.userWithRole('operator');
    expect((await viewer.post('/api/enrollment/tokens', { name: 'x' })).status).toBe(403);
    expect((await operator.get('/api/enrollment/tokens')).status).toBe(403);
    expect((await api.post('/api/enrollment/tokens', { name: 'x', maxUses: 0 })).status).toBe(400);
    expect((await api.post('/api/enrollment/tokens', { name: 'x', ttlSec: 5 })).status).toBe(400);

    const r = await api.post('/api/enrollment/tokens', { name: 'rack 7', ttlSec: 3600, maxUses: 2, labels: { zone: 'rack-7' } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const { token, id } = r.body;
    expect(token).toMatch(/^mst_enr_/);
    expect(r.body.installCommand).toContain(`--token ${token}`);
    expect(r.body).toMatchObject({ name: 'rack 7', maxUses: 2, uses: 0, labels: { zone: 'rack-7' }, state: 'active' });

    // Listed without the secret; stored only as its hash.
    const listed = (await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.id === id);
    expect(listed).toMatchObject({ name: 'rack 7', uses: 0, state: 'active' });
    expect(JSON.stringify(listed)).not.toContain(token);
    const row = await withDb(s.dbUrl, (k) => k('enrollment_tokens').where({ id }).first());
    expect(row.token_hash).toBe(createHash('sha256').update(token).digest('hex'));
    expect(JSON.stringify(row)).not.toContain(token);

    // An installer holding the token may download the agent package (404: none uploaded here);
    // a wrong one may not.
    const dl = (t: string) => fetch(`${s.url}/api/artifacts/latest/download`, { headers: { 'x-muster-enroll-token': t } }).then((x) => x.status);
    expect(await dl(token)).toBe(404);
    expect(await dl(`${token}x`)).toBe(401);

    // Two agents enroll and get the token's labels; the third is refused at the upgrade.
    for (const name of ['t1', 't2']) {
      const aid = randomUUID();
      const a = await helloAgent(s.wsUrl, { agentId: aid, enrollToken: token }, { name, labels: { own: 'yes' } });
      const v = await api.waitAgent(aid, 'online');
      expect(v.labels).toEqual({ own: 'yes', zone: 'rack-7' });
      a.close();
    }
    expect((await upgradeStatus(s.wsUrl, { 'X-Muster-Agent-Id': randomUUID(), 'X-Muster-Enroll-Token': token })).status).toBe(401);
    expect((await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.id === id)).toMatchObject({ uses: 2, state: 'used' });

    // Revoked: refused; unknown id: 404; every change audited.
    const r2 = await api.post('/api/enrollment/tokens', { name: 'short' });
    expect((await api.delete(`/api/enrollment/tokens/${r2.body.id}`)).status).toBe(204);
    expect((await upgradeStatus(s.wsUrl, { 'X-Muster-Agent-Id': randomUUID(), 'X-Muster-Enroll-Token': r2.body.token })).status).toBe(401);
    expect((await api.get(`/api/enrollment/tokens`)).body.items.find((t: any) => t.id === r2.body.id).state).toBe('revoked');
    expect((await api.delete('/api/enrollment/tokens/nope')).status).toBe(404);
    const audit = (await api.get('/api/audit?limit=200')).body.items.map((x: any) => x.action);
    expect(audit).toContain('enrollment_token.create');
    expect(audit).toContain('enrollment_token.revoke');
    expect(JSON.stringify((await api.get('/api/audit?limit=200')).body)).not.toContain(token);
  });

  it('a single-use token used by two sockets at once enrolls exactly one agent', async () => {
    const { token, id } = (await api.post('/api/enrollment/tokens', { name: 'once', maxUses: 1 })).body;
    const ids = [randomUUID(), randomUUID()];
    const socks = await Promise.all(ids.map((aid) => rawAgent(s.wsUrl, { agentId: aid, enrollToken: token })));
    socks.forEach((x, i) => x.send(helloFor(ids[i]!)));
    const answers = await Promise.all(socks.map((x) => x.next((m) => m.type === 'welcome' || m.type === 'error', 'answer')));
    expect(answers.filter((m) => m.type === 'welcome').length).toBe(1);
    const refused = answers.find((m) => m.type === 'error')!;
    expect(refused.message).toMatch(/used up, expired or revoked/);
    expect((await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.id === id).uses).toBe(1);
    for (const x of socks) x.close();
  });

  it("an enrollment token's labels merge over the agent's own as they change later; operator labels still win", async () => {
    const { token } = (await api.post('/api/enrollment/tokens', { name: 'zone', labels: { zone: 'rack-9', role: 'token' } })).body;
    const aid = randomUUID();
    const sel = async (q: string) => (await api.get(`/api/agents?selector=${encodeURIComponent(q)}`)).body.items.map((x: any) => x.id);
    const a = await helloAgent(s.wsUrl, { agentId: aid, enrollToken: token }, { labels: { env: 'dev', role: 'own' } });
    expect((await api.waitAgent(aid, 'online')).labels).toEqual({ env: 'dev', role: 'token', zone: 'rack-9' });
    // The agent's config labels change (SIGHUP): selectors see the new ones, the token's stay.
    a.send({ type: 'labels', labels: { env: 'prod' } });
    await waitFor(async () => (await sel('labels.env == "prod"')).includes(aid), 'reported label in selectors');
    expect((await api.get(`/api/agents/${aid}`)).body.labels).toEqual({ env: 'prod', role: 'token', zone: 'rack-9' });
    expect(await sel('labels.zone == "rack-9"')).toContain(aid);
    a.close();
    await api.waitAgent(aid, 'offline');
    // A later hello with other labels (the secret reconnect) takes effect too.
    const b = await helloAgent(s.wsUrl, { agentId: aid, secret: a.welcome.secret }, { labels: { env: 'qa' } });
    await waitFor(async () => (await sel('labels.env == "qa"')).includes(aid), 'hello labels in selectors');
    // An operator's labels replace everything; clearing them brings back reported + token labels.
    expect((await api.patch(`/api/agents/${aid}`, { labels: { only: 'op' } })).status).toBe(200);
    expect((await api.get(`/api/agents/${aid}`)).body.labels).toEqual({ only: 'op' });
    expect(await sel('labels.zone == "rack-9"')).not.toContain(aid);
    expect((await api.patch(`/api/agents/${aid}`, { labels: null })).status).toBe(200);
    expect((await api.get(`/api/agents/${aid}`)).body.labels).toEqual({ env: 'qa', role: 'token', zone: 'rack-9' });
    b.close();
  });

  it('an enrollment whose socket closes before the agent spoke after welcome is undone: the same id enrolls with the same single-use token', async () => {
    const first = (await api.post('/api/enrollment/tokens', { name: 'dropped', maxUses: 1, labels: { z: '1' } })).body;
    // The hello and the close frame leave together: the server is usually still writing the claim
    // when the socket goes (the secret, sent only in welcome, never reaches this agent); on a loaded
    // machine the welcome may go out first. Either way the agent never spoke after a welcome, so
    // nobody knows it holds the secret: the enrollment is undone.
    const aid = randomUUID();
    const dropped = await rawAgent(s.wsUrl, { agentId: aid, enrollToken: first.token });
    dropped.send(helloFor(aid, { name: 'dropped' }));
    dropped.close();
    await dropped.closed;
    const undone = await waitFor(
      async () =>
        (await api.get(`/api/audit?action=agent.enroll&targetId=${aid}`)).body.items.find(
          (r: any) => r.ok === false && /^connection closed before (welcome|the agent confirmed its secret)$/.test(r.details?.reason),
        ),
      'enrollment undone',
      30_000,
    );
    expect(undone.details.undone).toBe(true);
    expect((await api.get(`/api/agents/${aid}`)).status).toBe(404);
    expect((await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.id === first.id)).toMatchObject({ uses: 0, state: 'active' });

    // The agent's retry (same id, same token) enrolls and its secret works.
    const real = await helloAgent(s.wsUrl, { agentId: aid, enrollToken: first.token }, { name: 'real' });
    expect(typeof real.welcome.secret).toBe('string');
    expect((await api.waitAgent(aid, 'online')).name).toBe('real');
    expect((await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.id === first.id)).toMatchObject({ uses: 1, state: 'used' });
    real.close();
    await api.waitAgent(aid, 'offline');
    const again = await helloAgent(s.wsUrl, { agentId: aid, secret: real.welcome.secret });
    again.close();
  });

  it('a welcome the agent never answered: a retry waits (503) while that socket lives, the enrollment is undone when it closes, and the agent enrolls again with or without the secret it may have stored', async () => {
    const t = (await api.post('/api/enrollment/tokens', { name: 'lost-welcome', maxUses: 1 })).body;
    const aid = randomUUID();
    const silent = await rawAgent(s.wsUrl, { agentId: aid, enrollToken: t.token });
    silent.send(helloFor(aid, { name: 'silent' }));
    const welcome = await silent.next((m) => m.type === 'welcome', 'welcome');
    expect(typeof welcome.secret).toBe('string');
    await api.waitAgent(aid, 'online');

    // The welcome may never have reached the agent: its retry with the token is asked to wait,
    // not told its token is bad (401), while the enrollment is open.
    const retry = await upgradeStatus(s.wsUrl, agentHeaders({ agentId: aid, enrollToken: t.token }));
    expect(retry.status).toBe(503);
    expect(Number(retry.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(retry.body).toMatch(/enrollment of this agent id still in progress/);
    // Without the token nothing changes: a known id needs its secret.
    expect((await upgradeStatus(s.wsUrl, agentHeaders({ agentId: aid }))).status).toBe(401);

    silent.close();
    const undone = await waitFor(
      async () =>
        (await api.get(`/api/audit?action=agent.enroll&targetId=${aid}`)).body.items.find(
          (r: any) => r.ok === false && r.details?.reason === 'connection closed before the agent confirmed its secret',
        ),
      'enrollment undone',
      30_000,
    );
    expect(undone.details.undone).toBe(true);
    expect((await api.get(`/api/agents/${aid}`)).status).toBe(404);
    expect((await api.get('/api/enrollment/tokens')).body.items.find((x: any) => x.id === t.id)).toMatchObject({ uses: 0, state: 'active' });

    // Had the agent stored that secret, it comes back with it and its token (as the agent does until
    // a server accepts the secret): the id is unknown now, so the token enrolls it again.
    const back = await helloAgent(s.wsUrl, { agentId: aid, secret: welcome.secret, enrollToken: t.token }, { name: 'back' });
    expect(typeof back.welcome.secret).toBe('string');
    expect(back.welcome.secret).not.toBe(welcome.secret);
    expect((await api.waitAgent(aid, 'online')).name).toBe('back');
    // It spoke after that welcome (helloAgent heartbeats at once, like the agent): the enrollment
    // stands when its socket closes, and the secret it got is the one that works.
    back.close();
    await api.waitAgent(aid, 'offline');
    const audit = (await api.get(`/api/audit?action=agent.enroll&targetId=${aid}`)).body.items;
    expect(audit.filter((r: any) => r.ok === false)).toHaveLength(1);
    expect((await upgradeStatus(s.wsUrl, agentHeaders({ agentId: aid, secret: welcome.secret }))).status).toBe(401);
    const again = await helloAgent(s.wsUrl, { agentId: aid, secret: back.welcome.secret });
    expect(again.welcome.secret).toBeUndefined();
    again.close();
  });

  it('an agent back with its new secret (and its token beside it) whose enrollment is undone between its upgrade and its hello keeps that secret', async () => {
    const t = (await api.post('/api/enrollment/tokens', { name: 'undo-race', maxUses: 1 })).body;
    const aid = randomUUID();
    const silent = await rawAgent(s.wsUrl, { agentId: aid, enrollToken: t.token });
    silent.send(helloFor(aid, { name: 'silent' }));
    const welcome = await silent.next((m) => m.type === 'welcome', 'welcome');
    // The agent stored the secret; its answer is lost and it reconnects with the secret and the
    // token (the secret is not accepted yet): the upgrade checks the secret, the hello comes later.
    const back = await rawAgent(s.wsUrl, { agentId: aid, secret: welcome.secret, enrollToken: t.token });
    // Meanwhile the socket that carried the welcome closes: the enrollment is undone.
    silent.close();
    await waitFor(
      async () => (await api.get(`/api/audit?action=agent.enroll&targetId=${aid}`)).body.items.find((r: any) => r.ok === false && r.details?.undone === true),
      'enrollment undone',
      30_000,
    );
    expect((await api.get('/api/enrollment/tokens')).body.items.find((x: any) => x.id === t.id).uses).toBe(0);
    // The claim at hello finds no row with that secret: the token enrolls the agent again with it.
    back.send(helloFor(aid, { name: 'back' }));
    const w = await back.next((m) => m.type === 'welcome' || m.type === 'error', 'welcome');
    expect(w.type).toBe('welcome');
    expect(w.secret).toBeUndefined();
    back.send({ type: 'heartbeat', seq: 0, metrics: sampleMetrics() });
    expect((await api.waitAgent(aid, 'online')).name).toBe('back');
    expect((await api.get('/api/enrollment/tokens')).body.items.find((x: any) => x.id === t.id)).toMatchObject({ uses: 1, state: 'used' });
    const audit = (await api.get(`/api/audit?action=agent.enroll&targetId=${aid}`)).body.items;
    expect(audit.some((r: any) => r.ok === true && /enrolled again with the secret it holds/.test(r.details?.reason ?? ''))).toBe(true);
    back.close();
    await api.waitAgent(aid, 'offline');
    // The secret it holds is the one that works, alone.
    const again = await helloAgent(s.wsUrl, { agentId: aid, secret: welcome.secret });
    expect(again.welcome.secret).toBeUndefined();
    again.close();
  });
});

describe('enrollment without MUSTER_ENROLL_TOKEN', () => {
  it('has no implicit shared token; the local agent enrolls with its own token, never on its command line', async () => {
    const s = await startServer({ env: { MUSTER_ENROLL_TOKEN: '', MUSTER_LOCAL_AGENT: '1' } });
    const api = await Api.login(s.url);
    const e = (await api.get('/api/enrollment')).body;
    expect(e.token).toBeNull();
    expect(e.installCommand).toContain('<ENROLLMENT-TOKEN>');
    expect((await upgradeStatus(s.wsUrl, { 'X-Muster-Agent-Id': randomUUID(), 'X-Muster-Enroll-Token': s.enrollToken })).status).toBe(401);
    // `npm start` still brings up a live fleet of one.
    const local = await waitFor(
      async () => (await api.get('/api/agents')).body.items.find((a: any) => a.labels.local === 'true' && a.status === 'online'),
      'local agent online',
      60_000,
    );
    expect(local).toBeTruthy();
    const pid = Number(/"pid":(\d+)[^\n]*local agent started/.exec(s.output())?.[1]);
    expect(pid).toBeGreaterThan(0);
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(argv.join(' ')).not.toMatch(/--token|mst_enr_/);
    // Its token was single-use and is now spent; it is listed as internal.
    const internal = (await api.get('/api/enrollment/tokens')).body.items.filter((t: any) => t.internal);
    expect(internal.length).toBeGreaterThanOrEqual(1);
    expect(internal.every((t: any) => t.maxUses === 1)).toBe(true);
    expect(internal.some((t: any) => t.uses === 1)).toBe(true);
    await s.stop();
  }, 120_000);
});
