import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, consoleSocket, databases, startAgent, startServer, waitFor, type TestAgent, type TestServer } from '../helpers/harness.js';
import { withDb } from '../helpers/raw-agent.js';
import { TermClient } from '../helpers/terminal-client.js';

const dbs = await databases();

describe.each(dbs)('terminal sessions (%s): reattach, watch, recording, access, endings', (db) => {
  let s: TestServer;
  let admin: Api;
  let op: Api;
  let viewer: Api;
  let agent: TestAgent;
  let id: string;

  beforeAll(async () => {
    s = await startServer({ db, env: { MUSTER_TERMINAL_DETACH_TIMEOUT_SEC: '30' } });
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
    viewer = await admin.userWithRole('viewer');
    agent = startAgent(s, { name: `term-sess-${db}`, args: ['--terminal-max-sessions', '3'] });
    id = await agentId(agent);
    await admin.waitAgent(id, 'online');
  });
  afterAll(cleanup);

  it('detach and reattach replays the scrollback and continues', async () => {
    const c1 = await TermClient.connect(s, op);
    const t1 = await c1.open(id);
    const pid = (await t1.run('echo $$')).trim();
    await t1.run('for i in 1 2 3; do echo "replay-line-$i"; done');
    c1.close(); // a reload: the socket just goes away
    await waitFor(async () => {
      const r = await op.get(`/api/terminals/${t1.sessionId}`);
      return r.body.status === 'open' && r.body.attached === false;
    }, 'session detached but alive');

    const c2 = await TermClient.connect(s, op);
    const t2 = await c2.attach(t1.sessionId, 'control');
    expect(t2.mode).toBe('control');
    await t2.waitText(/replay-line-1[\s\S]*replay-line-2[\s\S]*replay-line-3/);
    expect((await t2.run('echo $$')).trim()).toBe(pid); // the same shell
    t2.close();
    expect((await t2.closedP).reason).toMatch(/closed by/);
    c2.close();
  });

  it('a second console of the owner takes the session over; another operator cannot', async () => {
    const c1 = await TermClient.connect(s, op);
    const t1 = await c1.open(id);
    await t1.run('true');
    const other = await admin.userWithRole('operator');
    const co = await TermClient.connect(s, other);
    await expect(co.attach(t1.sessionId, 'control')).rejects.toMatchObject({ code: 'forbidden' });
    await expect(co.attach(t1.sessionId, 'watch')).rejects.toMatchObject({ code: 'forbidden' });
    const c2 = await TermClient.connect(s, op);
    const t2 = await c2.attach(t1.sessionId, 'control');
    expect((await t1.closedP).reason).toMatch(/another console/);
    expect(await t2.run('echo still-here')).toContain('still-here');
    t2.close();
    await t2.closedP;
    for (const c of [c1, c2, co]) c.close();
  });

  it('an admin watcher sees output and cannot type', async () => {
    const oc = await TermClient.connect(s, op);
    const t = await oc.open(id);
    await t.run('echo before-watch');
    const ac = await TermClient.connect(s, admin);
    const w = await ac.attach(t.sessionId, 'watch');
    expect(w.mode).toBe('watch');
    await w.waitText('before-watch'); // scrollback replay
    const since = w.mark;
    await t.run('echo seen-by-$((1+1))-watchers');
    await w.waitText('seen-by-2-watchers', since);
    // Typing as a watcher is refused and reaches no shell.
    const tOut = t.mark;
    w.write('echo WATCHER-TYPED\r');
    await ac.sock.next((m) => m.type === 'error' && m.code === 'forbidden', 5000, 'watch input refusal');
    await t.run('echo fence');
    expect(t.textSince(tOut)).not.toContain('WATCHER-TYPED');
    const audit = await admin.get(`/api/audit?action=terminal.watch`);
    expect(audit.status).toBe(200);
    expect(audit.body.items.some((e: any) => e.targetId === t.sessionId && e.actor === 'admin')).toBe(true);
    // A watcher closing its view only leaves; the shell goes on.
    w.close();
    expect((await w.closedP).reason).toMatch(/stopped watching/);
    expect(await t.run('echo alive-after-watcher')).toContain('alive-after-watcher');
    const w2 = await ac.attach(t.sessionId, 'watch');
    t.close();
    expect((await w2.closedP).reason).toMatch(/closed by/);
    oc.close();
    ac.close();
  });

  it('a viewer and a foreign Origin are refused', async () => {
    const vc = await TermClient.connect(s, viewer);
    await expect(vc.open(id)).rejects.toMatchObject({ code: 'forbidden' });
    vc.close();
    await expect(consoleSocket(s, op, 'http://evil.example')).rejects.toThrow(/403/);
    const list = await viewer.get('/api/terminals');
    expect(list.status).toBe(200); // viewers may list sessions
  });

  it('the recording replays to the same text, with resizes', async () => {
    const c = await TermClient.connect(s, op);
    const t = await c.open(id, 90, 25);
    await t.run('printf "rec-%s\\n" 你好 🎉');
    t.resize(100, 40);
    await t.run('stty size');
    t.write('exit\r');
    await t.closedP;
    const seen = t.textSince(0);
    await waitFor(async () => (await op.get(`/api/terminals/${t.sessionId}`)).body.status === 'closed', 'session closed in the list');
    const r = await op.req('GET', `/api/terminals/${t.sessionId}/recording`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/asciicast/);
    const lines = String(typeof r.body === 'string' ? r.body : JSON.stringify(r.body))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const header = lines[0];
    expect(header).toMatchObject({ version: 2, width: 90, height: 25 });
    const events = lines.slice(1) as [number, string, string][];
    let last = 0;
    for (const e of events) {
      expect(e[0]).toBeGreaterThanOrEqual(last);
      last = e[0];
    }
    expect(
      events
        .filter((e) => e[1] === 'o')
        .map((e) => e[2])
        .join(''),
    ).toBe(seen);
    expect(events.some((e) => e[1] === 'r' && e[2] === '100x40')).toBe(true);
    // Others cannot fetch it; an admin can.
    const other = await admin.userWithRole('operator');
    expect((await other.req('GET', `/api/terminals/${t.sessionId}/recording`)).status).toBe(403);
    expect((await admin.req('GET', `/api/terminals/${t.sessionId}/recording`)).status).toBe(200);
    // The row tells who, where, when, why and how much.
    const row = (await op.get(`/api/terminals/${t.sessionId}`)).body;
    expect(row).toMatchObject({ agentId: id, status: 'closed', exitCode: 0, recording: true });
    expect(row.bytesOut).toBeGreaterThan(0);
    expect(row.bytesIn).toBeGreaterThan(0);
    expect(row.closeReason).toMatch(/exited with code 0/);
    // Stored as received (one copy of the bytes, not asciicast), turned into asciicast when fetched.
    const stored = await withDb(s.dbUrl, (k) => k('terminal_sessions').where({ id: t.sessionId }).first('recording'));
    const raw = fs.readFileSync(path.join(s.dataDir, stored.recording as string));
    expect(raw.subarray(0, 19).toString()).toBe('muster-recording 1\n');
    expect(raw.includes(Buffer.from('rec-你好'))).toBe(true);
    // A recording an earlier version wrote as asciicast (`.cast`) is served as it is.
    const legacy = '{"version":2,"width":80,"height":24}\n[0.5,"o","old \\u00e9\\r\\n"]\n';
    fs.writeFileSync(path.join(s.dataDir, 'recordings', 'legacy.cast'), legacy);
    await withDb(s.dbUrl, (k) =>
      k('terminal_sessions')
        .where({ id: t.sessionId })
        .update({ recording: path.join('recordings', 'legacy.cast') }),
    );
    const old = await op.req('GET', `/api/terminals/${t.sessionId}/recording`);
    expect(old.status).toBe(200);
    expect(old.headers.get('content-type')).toMatch(/asciicast/);
    expect(typeof old.body === 'string' ? old.body : JSON.stringify(old.body)).toBe(legacy);
    c.close();
  });

  it('lists sessions with pagination and audits open and close', async () => {
    const page1 = await viewer.get('/api/terminals?limit=2&offset=0');
    expect(page1.status).toBe(200);
    expect(page1.body.items.length).toBe(2);
    expect(page1.body.total).toBeGreaterThanOrEqual(4);
    const page2 = await viewer.get('/api/terminals?limit=2&offset=2');
    expect(page2.body.items[0].id).not.toBe(page1.body.items[0].id);
    const audit = await admin.get('/api/audit?action=terminal.open');
    expect(audit.body.items.some((e: any) => e.ok === false && e.actor.startsWith('viewer'))).toBe(true);
    expect(audit.body.items.filter((e: any) => e.ok).length).toBeGreaterThanOrEqual(4);
    const closes = await admin.get('/api/audit?action=terminal.close');
    expect(closes.body.items.length).toBeGreaterThanOrEqual(4);
  });

  it('the agent refuses more sessions than its limit', async () => {
    const c = await TermClient.connect(s, op);
    const open = [await c.open(id), await c.open(id), await c.open(id)];
    await expect(c.open(id)).rejects.toMatchObject({ code: 'limit_exceeded' });
    for (const t of open) t.close();
    await Promise.all(open.map((t) => t.closedP));
    c.close();
  });

  it('an agent disconnect ends its sessions with a reason the console gets', async () => {
    const c = await TermClient.connect(s, op);
    const t = await c.open(id);
    await t.run('true');
    await agent.stop('SIGKILL');
    const closed = await t.closedP;
    expect(closed.reason).toMatch(/agent disconnected/);
    const row = await waitFor(async () => {
      const r = await op.get(`/api/terminals/${t.sessionId}`);
      return r.body.status === 'closed' ? r.body : null;
    }, 'row closed');
    expect(row.closeReason).toMatch(/agent disconnected/);
    await expect(c.open(id)).rejects.toMatchObject({ code: 'agent_offline' });
    c.close();
  });
});

describe('terminal detach timeout', () => {
  afterAll(cleanup);
  it('a detached shell ends after the detach timeout (recording switched off)', async () => {
    const s = await startServer({ env: { MUSTER_TERMINAL_DETACH_TIMEOUT_SEC: '1', MUSTER_TERMINAL_RECORDING: '0' } });
    const admin = await Api.login(s.url);
    const a = startAgent(s, { name: 'term-detach' });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const c = await TermClient.connect(s, admin);
    const t = await c.open(id);
    const pid = Number((await t.run('echo $$')).trim());
    c.close();
    const row = await waitFor(
      async () => {
        const r = await admin.get(`/api/terminals/${t.sessionId}`);
        return r.body.status === 'closed' ? r.body : null;
      },
      'detached session closed',
      15_000,
    );
    expect(row.closeReason).toMatch(/detached for too long/);
    expect(row.recording).toBe(false);
    expect((await admin.req('GET', `/api/terminals/${t.sessionId}/recording`)).status).toBe(404);
    for (const ext of ['rec', 'cast']) expect(fs.existsSync(path.join(s.dataDir, 'recordings', `${t.sessionId}.${ext}`))).toBe(false);
    await waitFor(
      () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      'detached shell gone',
      5000,
      50,
    );
  });
});

describe('terminal idle timeout', () => {
  afterAll(cleanup);
  it('the agent closes a session without input or output for its idle timeout', async () => {
    const s = await startServer();
    const admin = await Api.login(s.url);
    const a = startAgent(s, { name: 'term-idle', args: ['--terminal-idle-timeout-sec', '2'] });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online');
    const c = await TermClient.connect(s, admin);
    const t = await c.open(id);
    const pid = Number((await t.run('echo $$')).trim());
    // Output keeps it alive: a loop printing every 0.5 s for 3 s outlives the 2 s timeout.
    await t.run('for i in 1 2 3 4 5 6; do echo tick; sleep 0.5; done');
    expect(t.closed).toBeNull();
    const closed = await t.closedP;
    expect(closed.reason).toMatch(/idle timeout/);
    await waitFor(
      () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      'idle shell gone',
      5000,
      50,
    );
  });
});
