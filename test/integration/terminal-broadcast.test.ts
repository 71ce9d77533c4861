/**
 * Broadcast typing over real agents' shells: one frame from the console reaches every joined
 * session (server-side fan-out); a pane that left gets nothing and rejoins; the pane limit
 * (MUSTER_BROADCAST_MAX_PANES) refuses the whole broadcast before any shell starts; viewers are
 * refused; one audit record names the sessions, next to the usual per-session terminal.open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { TermClient } from '../helpers/terminal-client.js';

describe('terminal broadcast', () => {
  let s: TestServer;
  let admin: Api;
  let op: Api;
  const ids: string[] = [];

  beforeAll(async () => {
    s = await startServer({ env: { MUSTER_BROADCAST_MAX_PANES: '3' } });
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator', 'bc-op');
    const agents = [1, 2, 3].map((i) => startAgent(s, { name: `bc-${i}` }));
    for (const a of agents) ids.push(await agentId(a));
    for (const id of ids) await admin.waitAgent(id, 'online');
  });
  afterAll(cleanup);

  it('types once into every joined pane; a pane that left gets nothing until it rejoins', async () => {
    const c = await TermClient.connect(s, op);
    const b = await c.broadcast(ids);
    expect(b.panes.every((p) => p !== null)).toBe(true);
    const [p1, p2, p3] = b.panes as [NonNullable<(typeof b.panes)[0]>, NonNullable<(typeof b.panes)[0]>, NonNullable<(typeof b.panes)[0]>];
    expect(new Set([p1.sessionId, p2.sessionId, p3.sessionId]).size).toBe(3);
    // Three shells, three pids: the same keystrokes ran in each of them.
    const marks = b.panes.map((p) => p!.mark);
    c.broadcastWrite(b.id, 'echo "bc-$((6*7))-$$"\r');
    const pids = await Promise.all(b.panes.map(async (p, i) => (await p!.waitText(/bc-42-(\d+)/, marks[i]))[1]));
    expect(new Set(pids).size).toBe(3);

    c.sendJson({ type: 'term.broadcast.member', broadcastId: b.id, sessionId: p2.sessionId, joined: false });
    const members = await c.sock.next((m) => m.type === 'term.broadcast.members' && m.joined.length === 2, 10_000, 'members without pane 2');
    expect(members.joined.sort()).toEqual([p1.sessionId, p3.sessionId].sort());
    const m2 = p2.mark;
    c.broadcastWrite(b.id, 'echo "left-$((3*3))"\r');
    await p1.waitText('left-9');
    await p3.waitText('left-9');
    // Frames of one socket are handled in order: once pane 2 answers its own command, the
    // broadcast frame before it would have reached its shell already.
    expect(await p2.run('echo own-$((2*2))')).toContain('own-4');
    expect(p2.textSince(m2)).not.toContain('left');

    c.sendJson({ type: 'term.broadcast.member', broadcastId: b.id, sessionId: p2.sessionId, joined: true });
    await c.sock.next((m) => m.type === 'term.broadcast.members' && m.joined.length === 3, 10_000, 'pane 2 back');
    c.broadcastWrite(b.id, 'echo "back-$((4*4))"\r');
    for (const p of b.panes) await p!.waitText('back-16');

    // Another console of the same operator cannot type into this console's broadcast.
    const other = await TermClient.connect(s, op);
    const m1 = p1.mark;
    other.broadcastWrite(b.id, 'echo "intruder-$((1+1))"\r');
    await other.sock.next((m) => m.type === 'error' && m.code === 'not_found', 10_000, 'refusal of a foreign broadcast id');
    expect(await p1.run('echo after')).toContain('after');
    expect(p1.textSince(m1)).not.toContain('intruder');

    // One audit record for the broadcast naming its sessions, and a terminal.open for each.
    const audit = await admin.get('/api/audit?action=terminal.broadcast');
    const rec = audit.body.items.find((e: any) => e.targetId === b.id);
    expect(rec).toBeTruthy();
    expect(rec.actor).toBe('bc-op');
    expect(rec.details.sessions.map((x: any) => x.sessionId).sort()).toEqual([p1.sessionId, p2.sessionId, p3.sessionId].sort());
    expect(rec.details.sessions.map((x: any) => x.agentId).sort()).toEqual([...ids].sort());
    const opens = await admin.get('/api/audit?action=terminal.open&limit=100');
    for (const p of b.panes) expect(opens.body.items.some((e: any) => e.details?.sessionId === p!.sessionId)).toBe(true);

    // A pane whose shell ends leaves the broadcast; the others go on.
    p3.write('exit\r');
    await p3.closedP;
    await c.sock.next((m) => m.type === 'term.broadcast.members' && m.joined.length === 2 && !m.joined.includes(p3.sessionId), 10_000, 'pane 3 gone');
    c.broadcastWrite(b.id, 'echo "two-$((5*5))"\r');
    await p1.waitText('two-25');
    await p2.waitText('two-25');
    c.close();
    other.close();
  });

  it('refuses more panes than MUSTER_BROADCAST_MAX_PANES, and viewers, before any shell starts', async () => {
    const before = (await admin.get('/api/terminals?status=open')).body.total;
    const c = await TermClient.connect(s, op);
    const err = await c.broadcast([...ids, 'no-such-agent']).catch((e: Error & { code?: string }) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe('limit_exceeded');
    expect((err as Error).message).toMatch(/4 agents picked; a broadcast has at most 3 panes \(MUSTER_BROADCAST_MAX_PANES\)/);
    const viewer = await admin.userWithRole('viewer');
    const cv = await TermClient.connect(s, viewer);
    await expect(cv.broadcast(ids.slice(0, 2))).rejects.toMatchObject({ code: 'forbidden' });
    // Nothing was opened by either refusal.
    await waitFor(async () => (await admin.get('/api/terminals?status=open')).body.total === before, 'no new sessions', 3_000).catch(() => {});
    expect((await admin.get('/api/terminals?status=open')).body.total).toBe(before);
    const refused = await admin.get('/api/audit?action=terminal.broadcast');
    expect(refused.body.items.some((e: any) => e.ok === false && e.details?.why === 'pane_limit')).toBe(true);
    expect(refused.body.items.some((e: any) => e.ok === false && e.details?.why === 'forbidden')).toBe(true);
    c.close();
    cv.close();
  });
});
