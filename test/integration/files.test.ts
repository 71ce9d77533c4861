import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, databases, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { outputText, waitTask } from '../helpers/exec.js';

const dbs = await databases();
const MAX = 1024 * 1024;
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * File distribution with real agents. The three agents share this machine, so each resolves
 * managed paths under its own root (MUSTER_AGENT_FILE_ROOT); their host policy allows /etc/muster-test.
 */
describe.each(dbs)('file distribution (%s)', (db) => {
  let s: TestServer;
  let admin: Api;
  let op: Api;
  let viewer: Api;
  const agents: { id: string; root: string; stateDir: string }[] = [];
  const onDisk = (i: number, p: string) => path.join(agents[i]!.root, p);

  const upload = (api: Api, fileId: string, body: Buffer) =>
    api.req('POST', `/api/files/${fileId}/revisions`, new Uint8Array(body), { 'content-type': 'application/octet-stream' });

  async function waitDistribution(id: string, states = ['succeeded', 'failed', 'cancelled'], timeoutMs = 60_000): Promise<any> {
    return waitFor(
      async () => {
        const r = await op.get(`/api/distributions/${id}`);
        return states.includes(r.body.state) ? r.body : null;
      },
      `distribution ${id} in ${states.join('|')}`,
      timeoutMs,
    );
  }

  beforeAll(async () => {
    s = await startServer({ db, env: { MUSTER_FILE_MAX_BYTES: String(MAX), MUSTER_FILE_CHUNK_BYTES: '65536', MUSTER_FILE_WINDOW_BYTES: '131072' } });
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
    viewer = await admin.userWithRole('viewer');
    const policyDir = tmpDir('policy');
    const policy = path.join(policyDir, 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ allowedPaths: ['/etc/muster-test'] }), { mode: 0o600 });
    for (const n of [1, 2, 3]) {
      const root = tmpDir(`root${n}`);
      const a = startAgent(s, {
        name: `files-${n}`,
        labels: { grp: 'files' },
        args: ['--policy', policy],
        env: { MUSTER_AGENT_FILE_ROOT: root, MUSTER_AGENT_FILE_CHECK_SEC: '0.3' },
      });
      const id = await agentId(a);
      await admin.waitAgent(id, 'online', 30_000);
      agents.push({ id, root, stateDir: a.stateDir });
    }
  }, 120_000);
  afterAll(cleanup);

  let fileId = '';
  const v1 = Buffer.from('listen 80;\n# revision one\n');
  // Several chunks and windows: flow control is exercised.
  const v2 = Buffer.concat([Buffer.from('listen 8080;\n'), Buffer.alloc(300_000, 'x'), Buffer.from('\n# end\n')]);

  it('creates a managed file and uploads a revision streamed as the raw body; roles are enforced', async () => {
    const created = await admin.post('/api/files', {
      path: '/etc/muster-test/app.conf',
      owner: 'nobody',
      group: 'nogroup',
      mode: '0640',
      postCommand: 'echo reloaded-$MUSTER_FILE_PATH',
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body).toMatchObject({ path: '/etc/muster-test/app.conf', owner: 'nobody', group: 'nogroup', mode: 0o640, latestRevision: 0 });
    fileId = created.body.id;
    expect((await admin.post('/api/files', { path: '/etc/muster-test/app.conf' })).status).toBe(409);
    expect((await admin.post('/api/files', { path: '/etc/muster-test/../shadow' })).status).toBe(400);

    // Operators distribute; only admins create files and upload revisions.
    const refused = await upload(op, fileId, v1);
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('forbidden');
    expect((await op.post('/api/files', { path: '/etc/muster-test/x' })).status).toBe(403);

    const r1 = await upload(admin, fileId, v1);
    expect(r1.status, JSON.stringify(r1.body)).toBe(201);
    expect(r1.body).toMatchObject({ revision: 1, sha256: sha(v1), size: v1.length, createdBy: 'admin' });
    const got = await fetch(`${s.url}/api/files/${fileId}/revisions/1/content`, { headers: { cookie: op.cookie } });
    expect(Buffer.from(await got.arrayBuffer()).equals(v1)).toBe(true);
    expect((await viewer.get(`/api/files/${fileId}/revisions/1/content`)).status).toBe(403);
    expect((await viewer.post(`/api/files/${fileId}/distributions`, { targets: { selector: 'all' } })).status).toBe(403);
  });

  it('refuses content over MUSTER_FILE_MAX_BYTES with 413, before and while streaming, and keeps nothing', async () => {
    const big = Buffer.alloc(MAX + 1, 1);
    const r = await upload(admin, fileId, big);
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('payload_too_large');
    expect(r.body.error.message).toMatch(/MUSTER_FILE_MAX_BYTES/);
    // Without a Content-Length (chunked): refused once the limit is crossed.
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 20; i++) c.enqueue(new Uint8Array(64 * 1024));
        c.close();
      },
    });
    const res = await fetch(`${s.url}/api/files/${fileId}/revisions`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
      headers: { 'content-type': 'application/octet-stream', cookie: admin.cookie },
    } as RequestInit).catch((err: Error) => err);
    if (!(res instanceof Error)) expect(res.status).toBe(413);
    const revs = await admin.get(`/api/files/${fileId}/revisions`);
    expect(revs.body.items.map((x: any) => x.revision)).toEqual([1]);
    const leftovers = fs.readdirSync(path.join(s.dataDir, 'files')).filter((f) => f.endsWith('.upload'));
    expect(leftovers).toEqual([]);
  });

  it('distributes a revision to three agents in two waves: content, mode and owner on disk, per-host results, post-apply command', async () => {
    const d = await op.post(`/api/files/${fileId}/distributions`, { targets: { selector: 'labels.grp == "files"' }, waves: [1, '100%'] });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    const done = await waitDistribution(d.body.id);
    expect(done.state, JSON.stringify(done)).toBe('succeeded');
    expect(done.targets.map((t: any) => t.wave).sort()).toEqual([0, 1, 1]);
    expect(done.targets.every((t: any) => t.state === 'applied')).toBe(true);
    for (let i = 0; i < 3; i++) {
      const file = onDisk(i, '/etc/muster-test/app.conf');
      expect(fs.readFileSync(file).equals(v1)).toBe(true);
      const st = fs.statSync(file);
      expect(st.mode & 0o7777).toBe(0o640);
      expect(st.uid).toBe(65534);
      expect(st.gid).toBe(65534);
      // No temporary file is left next to it.
      expect(fs.readdirSync(path.dirname(file))).toEqual(['app.conf']);
    }
    // The post-apply command ran on each host (content changed), stored as a task's execution.
    for (const t of done.targets) {
      expect(t.postTaskId).toBeTruthy();
      const task = await waitTask(op, t.postTaskId);
      expect(task.status).toBe('succeeded');
      expect(await outputText(op, task.executions[0].id)).toContain('reloaded-/etc/muster-test/app.conf');
    }
    const f = await viewer.get(`/api/files/${fileId}`);
    expect(f.body.hosts.map((h: any) => [h.revision, h.state])).toEqual([
      [1, 'ok'],
      [1, 'ok'],
      [1, 'ok'],
    ]);
    const audit = await admin.get(`/api/audit?action=file.distribute&targetId=${fileId}`);
    expect(audit.body.items[0]).toMatchObject({ role: 'operator', action: 'file.distribute', details: expect.objectContaining({ revision: 1, targets: 3 }) });
  });

  it('re-applying the same revision reports unchanged and runs no post-apply command', async () => {
    const d = await op.post(`/api/files/${fileId}/distributions`, { targets: { selector: 'labels.grp == "files"' } });
    const done = await waitDistribution(d.body.id);
    expect(done.state).toBe('succeeded');
    expect(done.targets.map((t: any) => t.state)).toEqual(['unchanged', 'unchanged', 'unchanged']);
    expect(done.targets.every((t: any) => t.postTaskId === null)).toBe(true);
  });

  it('a new revision replaces the content (the previous is kept on the host); a rollback is one action', async () => {
    const r2 = await upload(admin, fileId, v2);
    expect(r2.body.revision).toBe(2);
    const d = await op.post(`/api/files/${fileId}/distributions`, { targets: { selector: 'labels.grp == "files"' } });
    expect((await waitDistribution(d.body.id)).state).toBe('succeeded');
    for (let i = 0; i < 3; i++) {
      expect(sha(fs.readFileSync(onDisk(i, '/etc/muster-test/app.conf')))).toBe(sha(v2));
      const kept = fs.readdirSync(path.join(agents[i]!.stateDir, 'files')).find((f) => f.endsWith('.previous'))!;
      expect(fs.readFileSync(path.join(agents[i]!.stateDir, 'files', kept)).equals(v1)).toBe(true);
    }
    // Rollback: no body needed; it goes to the revision before the one the hosts hold, on those hosts.
    const rb = await op.post(`/api/files/${fileId}/rollback`, {});
    expect(rb.status, JSON.stringify(rb.body)).toBe(201);
    expect(rb.body.revision).toBe(1);
    const done = await waitDistribution(rb.body.id);
    expect(done.state).toBe('succeeded');
    expect(done.total).toBe(3);
    for (let i = 0; i < 3; i++) expect(fs.readFileSync(onDisk(i, '/etc/muster-test/app.conf')).equals(v1)).toBe(true);
    const audit = await admin.get(`/api/audit?action=file.rollback&targetId=${fileId}`);
    expect(audit.body.total).toBe(1);
  });

  it('a local edit on one host is reported as drift; re-applying fixes it', async () => {
    fs.appendFileSync(onDisk(1, '/etc/muster-test/app.conf'), 'edited by hand\n');
    const drifted = await waitFor(
      async () => {
        const r = await viewer.get(`/api/files/${fileId}/hosts?drifted=true`);
        return r.body.items.length ? r.body.items : null;
      },
      'drift reported',
      30_000,
    );
    expect(drifted).toEqual([expect.objectContaining({ agentId: agents[1]!.id, state: 'drifted', reason: 'content changed on the host' })]);
    const list = await viewer.get('/api/files');
    expect(list.body.items.find((f: any) => f.id === fileId)).toMatchObject({ hostCount: 3, driftedCount: 1 });
    // A mode change is drift too.
    fs.chmodSync(onDisk(2, '/etc/muster-test/app.conf'), 0o666);
    await waitFor(async () => (await viewer.get(`/api/files/${fileId}/hosts?drifted=true`)).body.items.length === 2 || null, 'mode drift', 30_000);

    const d = await op.post(`/api/files/${fileId}/distributions`, { revision: 1, targets: { selector: 'labels.grp == "files"' } });
    const done = await waitDistribution(d.body.id);
    const byAgent = Object.fromEntries(done.targets.map((t: any) => [t.agentId, t.state]));
    expect(byAgent).toEqual({ [agents[0]!.id]: 'unchanged', [agents[1]!.id]: 'applied', [agents[2]!.id]: 'applied' });
    await waitFor(async () => (await viewer.get(`/api/files/${fileId}/hosts?drifted=true`)).body.items.length === 0 || null, 'drift cleared', 30_000);
  });

  it('a path outside the host policy is refused by the agent; past maxFailures the distribution pauses, and resumes', async () => {
    const other = await admin.post('/api/files', { path: '/etc/not-allowed/x.conf', content: Buffer.from('nope\n').toString('base64') });
    expect(other.status).toBe(201);
    expect(other.body.latestRevision).toBe(1);
    const d = await op.post(`/api/files/${other.body.id}/distributions`, {
      targets: { selector: 'labels.grp == "files"' },
      waves: [1, '100%'],
      maxFailures: 0,
    });
    const paused = await waitDistribution(d.body.id, ['paused']);
    expect(paused.reason).toMatch(/exceed maxFailures 0/);
    const failed = paused.targets.filter((t: any) => t.state === 'failed');
    expect(failed).toHaveLength(1);
    expect(failed[0].reason).toMatch(/^policy_denied: .*outside the host policy's allowedPaths/);
    expect(paused.targets.filter((t: any) => t.state === 'pending')).toHaveLength(2);
    // Resumed, the next wave goes out; its failures are new ones and pause it again.
    const resumed = await op.post(`/api/distributions/${d.body.id}/resume`);
    expect(resumed.status).toBe(200);
    const again = await waitFor(
      async () => {
        const r = await op.get(`/api/distributions/${d.body.id}`);
        return r.body.state === 'paused' && r.body.counts.failed === 3 ? r.body : null;
      },
      'paused again after the second wave',
      60_000,
    );
    expect(again.reason).toMatch(/failure\(s\) exceed maxFailures 0/);
    expect((await op.post(`/api/distributions/${d.body.id}/cancel`)).status).toBe(200);
    expect((await waitDistribution(d.body.id)).state).toBe('cancelled');
    for (let i = 0; i < 3; i++) expect(fs.existsSync(onDisk(i, '/etc/not-allowed/x.conf'))).toBe(false);
    expect((await admin.delete(`/api/files/${other.body.id}?removeFromHosts=false`)).status).toBe(200);
  });

  it('a symbolic link inside an allowed directory does not carry a write outside it', async () => {
    // On each host, /etc/muster-test/escape is a link to a directory outside the allowed path.
    const outside = [0, 1, 2].map((i) => {
      const dir = onDisk(i, '/etc/outside-the-policy');
      fs.mkdirSync(dir, { recursive: true });
      fs.mkdirSync(onDisk(i, '/etc/muster-test'), { recursive: true });
      fs.symlinkSync(dir, onDisk(i, '/etc/muster-test/escape'));
      return dir;
    });
    const f = await admin.post('/api/files', { path: '/etc/muster-test/escape/owned.conf', content: Buffer.from('escaped\n').toString('base64') });
    expect(f.status).toBe(201);
    const d = await op.post(`/api/files/${f.body.id}/distributions`, { targets: { selector: 'labels.grp == "files"' }, waves: ['100%'], maxFailures: 10 });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    const done = await waitDistribution(d.body.id, ['succeeded', 'failed', 'paused']);
    for (const t of done.targets) {
      expect(t.state).toBe('failed');
      expect(t.reason).toMatch(/^policy_denied: .*symbolic link.*outside the host policy's allowedPaths/);
    }
    for (const dir of outside) expect(fs.existsSync(path.join(dir, 'owned.conf'))).toBe(false);
    if (done.state === 'paused') expect((await op.post(`/api/distributions/${d.body.id}/cancel`)).status).toBe(200);
    expect((await admin.delete(`/api/files/${f.body.id}?removeFromHosts=false`)).status).toBe(200);
  });

  it('deleting with removeFromHosts=true removes the file from the hosts; every change is audited', async () => {
    expect((await op.delete(`/api/files/${fileId}?removeFromHosts=true`)).status).toBe(403);
    expect((await admin.delete(`/api/files/${fileId}`)).status).toBe(400);
    const del = await admin.delete(`/api/files/${fileId}?removeFromHosts=true`);
    expect(del.status, JSON.stringify(del.body)).toBe(200);
    const done = await waitDistribution(del.body.distribution.id);
    expect(done.counts).toEqual({ removed: 3 });
    for (let i = 0; i < 3; i++) expect(fs.existsSync(onDisk(i, '/etc/muster-test/app.conf'))).toBe(false);
    expect((await admin.get(`/api/files/${fileId}`)).status).toBe(404);
    const actions = (await admin.get(`/api/audit?targetId=${fileId}&limit=100`)).body.items.map((a: any) => a.action);
    for (const a of ['file.create', 'file.revision', 'file.distribute', 'file.rollback', 'file.delete']) expect(actions).toContain(a);
  });
});
