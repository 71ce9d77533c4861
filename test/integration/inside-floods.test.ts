/**
 * Issue 9, defect 10: floods from inside. An agent or console socket that sends control messages
 * faster than its bucket allows is cut with a reason and audited once; refused actions repeated
 * by one user are one audit row per window with a count; terminals are capped per user.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloseCode } from '../../protocol/errors.js';
import { Api, agentId, cleanup, consoleSocket, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { helloAgent } from '../helpers/raw-agent.js';

afterAll(cleanup);

describe('floods from inside', () => {
  let s: TestServer;
  let admin: Api;

  beforeAll(async () => {
    s = await startServer({
      env: {
        MUSTER_AGENT_MESSAGE_RATE: '20',
        MUSTER_AGENT_MESSAGE_BURST: '50',
        MUSTER_CONSOLE_MESSAGE_RATE: '20',
        MUSTER_CONSOLE_MESSAGE_BURST: '60',
        MUSTER_AUDIT_REFUSAL_WINDOW_SEC: '2',
        MUSTER_AUDIT_POLICY_BURST: '3',
        MUSTER_MAX_TERMINALS_PER_USER: '2',
      },
    });
    admin = await Api.login(s.url);
  });

  const auditOf = async (action: string) => (await admin.get(`/api/audit?action=${action}&limit=100`)).body.items as any[];

  it('an agent flooding labels messages is cut with a reason and audited once', async () => {
    const id = randomUUID();
    const a = await helloAgent(s.wsUrl, { agentId: id, enrollToken: s.enrollToken });
    for (let i = 0; i < 400 && a.isOpen(); i++) a.send({ type: 'labels', labels: { n: String(i) } });
    const closed = await a.closed;
    expect(closed.code).toBe(CloseCode.protocolError);
    expect(closed.reason).toMatch(/rate exceeded/);
    await waitFor(async () => (await auditOf('agent.rate_limited')).some((r) => r.targetId === id), 'audit row');
    expect((await auditOf('agent.rate_limited')).filter((r) => r.targetId === id).length).toBe(1);
  });

  it('replies naming executions or sessions the server does not hold for this agent count against the rate', async () => {
    const id = randomUUID();
    const a = await helloAgent(s.wsUrl, { agentId: id, enrollToken: s.enrollToken });
    const now = Date.now();
    for (let i = 0; i < 400 && a.isOpen(); i++) {
      a.send(
        i % 2
          ? {
              type: 'exec.finished',
              executionId: randomUUID(),
              status: 'succeeded',
              exitCode: 0,
              signal: null,
              startedAt: now,
              finishedAt: now,
              outputSeq: 0,
              truncated: false,
            }
          : { type: 'term.exit', sessionId: randomUUID(), exitCode: 0, signal: null, reason: 'exited' },
      );
    }
    const closed = await a.closed;
    expect(closed.code).toBe(CloseCode.protocolError);
    expect(closed.reason).toMatch(/rate exceeded/);
    await waitFor(async () => (await auditOf('agent.rate_limited')).some((r) => r.targetId === id), 'audit row');
  });

  it('an agent flapping its policy writes at most MUSTER_AUDIT_POLICY_BURST agent.policy rows per window, then one row with the count', async () => {
    const id = randomUUID();
    const a = await helloAgent(s.wsUrl, { agentId: id, enrollToken: s.enrollToken });
    const policy = (exec: boolean) => ({
      source: 'file',
      path: '/etc/muster/policy.json',
      terminals: true,
      exec,
      interpreters: null,
      runAs: null,
      requireSignedScripts: false,
      scriptPublicKeys: [],
      allowedPaths: null,
    });
    // Under the message burst: 40 changes (false, true, false, ...), the last one exec: true.
    for (let i = 0; i < 40; i++) a.send({ type: 'policy', policy: policy(i % 2 === 1) });
    await waitFor(async () => (await admin.get(`/api/agents/${id}`)).body.policy?.exec === true, 'last policy applied');
    const rows = await waitFor(
      async () => {
        const r = (await admin.get(`/api/audit?action=agent.policy&targetId=${id}`)).body.items as any[];
        return r.some((x) => x.details.coalesced) ? r : null;
      },
      "the window's folded row",
      20_000,
    );
    // Newest first: the folded row (the last policy, standing for the 37 after the burst of 3), then the burst.
    expect(rows.length).toBe(4);
    expect(rows[0].details).toMatchObject({ exec: true, coalesced: 37 });
    expect(rows[3].details).toMatchObject({ exec: false, first: true });
    a.close();
  });

  it('a console flooding messages is cut with a reason and audited once; refused term.open is aggregated', async () => {
    const viewer = await admin.userWithRole('viewer', `flood-viewer-${Date.now()}`);
    const c = await consoleSocket(s, viewer);
    await c.next((m) => m.type === 'ready');
    // Under the burst: 30 refused term.open, each answered, one audit row with the count, even
    // though each names another agent (the refusal does not depend on the target).
    const agents = Array.from({ length: 30 }, () => randomUUID());
    const agent = agents[0];
    for (let i = 0; i < 30; i++) c.ws.send(JSON.stringify({ type: 'term.open', ref: `r${i}`, agentId: agents[i], cols: 80, rows: 24 }));
    await waitFor(() => c.messages.filter((m) => m.type === 'error' && m.code === 'forbidden').length === 30, '30 refusals', 15_000);
    // The first refusal is audited at once; the window's end brings that one row's count up.
    const rows = await waitFor(
      async () => {
        const r = (await auditOf('terminal.open')).filter((x) => x.actor.startsWith('flood-viewer'));
        return r.length && r[0].details.count === 30 ? r : null;
      },
      'aggregated refusal row',
      20_000,
    );
    expect(rows.length).toBe(1);
    expect(rows[0].ok).toBe(false);
    expect(rows[0].targetId).toBe(agent);
    expect(rows[0].details).toMatchObject({ why: 'forbidden', count: 30, lastTargetId: agents[29] });

    // Then a flood: the socket is cut with a reason, audited once.
    const closed = new Promise<{ code: number; reason: string }>((r) => c.ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
    for (let i = 0; i < 500 && c.ws.readyState === c.ws.OPEN; i++) c.ws.send(JSON.stringify({ type: 'ping', ref: String(i) }));
    const cl = await closed;
    expect(cl.code).toBe(CloseCode.protocolError);
    expect(cl.reason).toMatch(/rate exceeded/);
    await waitFor(async () => (await auditOf('console.rate_limited')).some((r) => r.actor.startsWith('flood-viewer')), 'console audit row');
    expect((await auditOf('console.rate_limited')).filter((r) => r.actor.startsWith('flood-viewer')).length).toBe(1);
  });

  it('terminals per user are capped with a clear error code', async () => {
    const a = startAgent(s, { name: 'term-cap' });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const op = await admin.userWithRole('operator');
    const c = await consoleSocket(s, op);
    await c.next((m) => m.type === 'ready');
    for (const ref of ['t1', 't2']) {
      c.ws.send(JSON.stringify({ type: 'term.open', ref, agentId: id, cols: 80, rows: 24 }));
      await c.next((m) => m.ref === ref && m.type === 'term.opened', 30_000, `${ref} opened`);
    }
    c.ws.send(JSON.stringify({ type: 'term.open', ref: 't3', agentId: id, cols: 80, rows: 24 }));
    const e = await c.next((m) => m.ref === 't3', 15_000, 't3 answer');
    expect(e.type).toBe('error');
    expect(e.code).toBe('limit_exceeded');
    expect(e.message).toMatch(/MUSTER_MAX_TERMINALS_PER_USER/);
    c.close();
  }, 90_000);
});
