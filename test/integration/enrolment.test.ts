/**
 * Enrolment (issue 9): the agent id is claimed atomically at hello, so a socket that upgraded
 * with the enrolment token while an id was free cannot take over the agent that enrolled with that
 * id meanwhile; enrolment tokens as resources (TTL, uses, labels, revoke, hashed, shown once).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode } from '../../protocol/errors.js';
import { Api, cleanup, databases, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { helloAgent, helloFor, rawAgent } from '../helpers/raw-agent.js';

const dbs = await databases();

describe.each(dbs)('enrolment (%s)', (db) => {
  let s: TestServer;
  let api: Api;

  beforeAll(async () => {
    s = await startServer({ db });
    api = await Api.login(s.url);
  });
  afterAll(cleanup);

  it('a held enrolment socket cannot take over an id that enrolled meanwhile', async () => {
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
    expect(closed.code).toBe(CloseCode.enrolmentRefused);
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
    const audit = (await api.get(`/api/audit?action=agent.enrol&targetId=${id}`)).body.items;
    expect(audit.some((r: any) => r.ok === false && /already enrolled/.test(r.details?.reason))).toBe(true);
    expect(audit.some((r: any) => r.ok === true)).toBe(true);
  });

  it('two enrolments of one id racing at hello: exactly one wins', async () => {
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
});
