import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, createTask, outputRaw, outputText, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, databases, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

const dbs = await databases();

describe.each(dbs)('exec basics (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    s = await startServer({
      db,
      env: { MUSTER_MAX_OUTPUT_BYTES: '65536', MUSTER_MAX_SCRIPT_BYTES: '4096', MUSTER_MAX_TARGETS_PER_TASK: '3', MUSTER_MAX_EXECUTIONS_PER_AGENT: '1' },
    });
    api = await Api.login(s.url);
    for (const [name, role] of [
      ['b-1', 'web'],
      ['b-2', 'web'],
      ['b-3', 'db'],
    ] as const) {
      const a = startAgent(s, { name, labels: { role } });
      ids[name] = await agentId(a);
      await api.waitAgent(ids[name]!, 'online');
    }
  });
  afterAll(cleanup);

  it('three agents: stdout and stderr separately, in order, with exit codes; one exits 3 → failed', async () => {
    const t = await createTask(api, {
      script: 'for i in 1 2 3 4 5; do echo "out $i"; echo "err $i" >&2; done\n[ "$MUSTER_AGENT_ID" = "$1" ] && exit 3\nexit 0',
      args: [ids['b-2']],
      targets: { selector: 'b-1,b-2,b-3' },
    });
    expect(t.executions).toHaveLength(3);
    const d = await waitTask(api, t.id);
    expect(d.status).toBe('failed');
    expect(d.counts).toEqual({ succeeded: 2, failed: 1 });
    expect(d.executions.map((e: any) => [e.agentName, e.status, e.exitCode])).toEqual([
      ['b-1', 'succeeded', 0],
      ['b-2', 'failed', 3],
      ['b-3', 'succeeded', 0],
    ]);
    for (const e of d.executions) {
      expect(await outputText(api, e.id, 'stdout')).toBe('out 1\nout 2\nout 3\nout 4\nout 5\n');
      expect(await outputText(api, e.id, 'stderr')).toBe('err 1\nerr 2\nerr 3\nerr 4\nerr 5\n');
      expect(e.startedAt).toBeTruthy();
      expect(e.finishedAt).toBeTruthy();
      expect(e.durationMs).toBeGreaterThanOrEqual(0);
    }
    const one = await api.get(`/api/executions/${d.executions[1].id}`);
    expect(one.body).toMatchObject({ status: 'failed', exitCode: 3, agentId: ids['b-2'], taskId: t.id });

    // Selected by label; env reaches the script.
    const t2 = await createTask(api, { script: 'echo "me $GREETING"', env: { GREETING: 'hello world' }, targets: { selector: 'labels.role == "web"' } });
    const d2 = await waitTask(api, t2.id);
    expect(d2.counts).toEqual({ succeeded: 2 });
    expect(await outputText(api, d2.executions[0].id)).toBe('me hello world\n');
    const list = await api.get('/api/tasks?limit=100');
    expect(list.status).toBe(200);
    expect(list.body.total).toBeGreaterThanOrEqual(2);
    const row = list.body.items.find((x: any) => x.id === t.id);
    expect(row.counts).toEqual({ succeeded: 2, failed: 1 });
    expect(row.status).toBe('failed');
    const failed = await api.get('/api/tasks?status=failed');
    expect(failed.body.items.map((x: any) => x.id)).toContain(t.id);
    expect(failed.body.items.map((x: any) => x.id)).not.toContain(t2.id);
    const hist = await api.get(`/api/executions?agentId=${ids['b-2']}`);
    expect(hist.status).toBe(200);
    expect(hist.body.items[0]).toMatchObject({ taskId: t2.id, agentId: ids['b-2'], status: 'succeeded', script: 'echo "me $GREETING"' });
    expect(hist.body.items[1]).toMatchObject({ taskId: t.id, status: 'failed', exitCode: 3 });
    expect(hist.body.items.every((x: any) => x.agentId === ids['b-2'])).toBe(true);
    const mine = await api.get(`/api/tasks?createdBy=admin&since=${Date.parse(t.createdAt)}`);
    expect(mine.body.items.map((x: any) => x.id)).toEqual([t2.id, t.id]);
  });

  it('Chinese text, emoji and invalid UTF-8 round-trip (raw bytes exact, text with replacement)', async () => {
    const t = await createTask(api, {
      script: "printf '你好，世界 🚀🎉\\n'; printf 'bad \\377\\376 bytes\\n'; printf '\\000\\001\\002' >&2",
      targets: { agentIds: [ids['b-1']] },
    });
    const d = await waitTask(api, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('succeeded');
    const raw = await outputRaw(api, e.id, 'stdout');
    expect(raw.equals(Buffer.concat([Buffer.from('你好，世界 🚀🎉\nbad '), Buffer.from([0xff, 0xfe]), Buffer.from(' bytes\n')]))).toBe(true);
    expect(await outputText(api, e.id, 'stdout')).toBe('你好，世界 🚀🎉\nbad \uFFFD\uFFFD bytes\n');
    expect((await outputRaw(api, e.id, 'stderr')).equals(Buffer.from([0, 1, 2]))).toBe(true);
  });

  it('arguments with quotes, $() and ; arrive literally; python3 and node interpreters', async () => {
    const pwned = path.join(tmpDir('pwn'), 'pwned');
    const args = ['it\'s "quoted"', `$(touch ${pwned})`, 'a; rm -rf /', '`id`', ' spaced  '];
    const t = await createTask(api, { script: 'for a in "$@"; do printf "[%s]\\n" "$a"; done', args, targets: { agentIds: [ids['b-1']] } });
    const d = await waitTask(api, t.id);
    expect(await outputText(api, d.executions[0].id)).toBe(args.map((a) => `[${a}]\n`).join(''));
    expect(fs.existsSync(pwned)).toBe(false);
    const py = await createTask(api, {
      script: 'import sys\nprint("|".join(sys.argv[1:]))',
      interpreter: 'python3',
      args,
      targets: { agentIds: [ids['b-1']] },
    });
    expect(await outputText(api, (await waitTask(api, py.id)).executions[0].id)).toBe(`${args.join('|')}\n`);
    const js = await createTask(api, {
      script: 'console.log(JSON.stringify(process.argv.slice(2)))',
      interpreter: 'node',
      args,
      targets: { agentIds: [ids['b-1']] },
    });
    expect(JSON.parse(await outputText(api, (await waitTask(api, js.id)).executions[0].id))).toEqual(args);
    const sb = await createTask(api, { script: '#!/bin/sh\necho "sh:$1"', interpreter: 'shebang', args: ['x y'], targets: { agentIds: [ids['b-1']] } });
    expect(await outputText(api, (await waitTask(api, sb.id)).executions[0].id)).toBe('sh:x y\n');
    const cwd = tmpDir('cwd');
    const wd = await createTask(api, { script: 'pwd; ls -ld "$0" | cut -c1-10', interpreter: 'sh', cwd, targets: { agentIds: [ids['b-1']] } });
    // Runs in cwd; the script file itself is private (rwx------).
    expect(await outputText(api, (await waitTask(api, wd.id)).executions[0].id)).toBe(`${fs.realpathSync(cwd)}\n-rwx------\n`);
    const nowd = await createTask(api, { script: 'pwd', cwd: '/nonexistent/dir', targets: { agentIds: [ids['b-1']] } });
    const nd = (await waitTask(api, nowd.id)).executions[0];
    expect(nd.status).toBe('failed');
    expect(nd.reason).toMatch(/could not start/);
  });

  it('output beyond the cap is marked truncated and the execution still finishes', async () => {
    const dir = tmpDir('trunc');
    const marker = path.join(dir, 'done');
    const t = await createTask(api, {
      script: 'head -c 300000 /dev/zero | tr "\\0" "x"; echo; echo finished > "$1"; exit 0',
      args: [marker],
      targets: { agentIds: [ids['b-2']] },
    });
    const d = await waitTask(api, t.id);
    const e = d.executions[0];
    expect(e.status).toBe('succeeded');
    expect(e.truncated).toBe(true);
    expect(e.reason).toMatch(/truncated at 65536 bytes \(MUSTER_MAX_OUTPUT_BYTES\)/);
    expect(e.outputBytes).toBe(65536);
    expect(fs.readFileSync(marker, 'utf8')).toBe('finished\n');
    expect((await outputRaw(api, e.id)).length).toBe(65536);
    const one = await api.get(`/api/executions/${e.id}`);
    expect(one.body.truncated).toBe(true);
  });

  it('limits, validation and roles: 413, 400 with selector position, viewer 403, audit', async () => {
    const big = await api.post('/api/tasks', { script: 'x'.repeat(5000), targets: { selector: 'all' } });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('payload_too_large');
    const bad = await api.post('/api/tasks', { script: 'true', targets: { selector: 'labels.role == web' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('selector_syntax');
    expect(bad.body.error.position).toBe(15);
    expect(bad.body.error.expected).toBe('a quoted string');
    const badAgents = await api.get(`/api/agents?selector=${encodeURIComponent('(status == "online"')}`);
    expect(badAgents.status).toBe(400);
    expect(badAgents.body.error.position).toBe(19);
    const many = await api.post('/api/tasks', { script: 'true', targets: { agentIds: [...Object.values(ids), 'nope'] } });
    expect(many.status).toBe(400);
    expect(many.body.error.message).toMatch(/unknown agent/);
    await api.waitAgent(ids['b-1']!, 'online');
    const a4 = startAgent(s, { name: 'b-4' });
    await api.waitAgent(await agentId(a4), 'online');
    const tooMany = await api.post('/api/tasks', { script: 'true', targets: { selector: 'b-1,b-2,b-3,b-4' } });
    expect(tooMany.status).toBe(422);
    expect(tooMany.body.error.code).toBe('limit_exceeded');
    await a4.stop();
    const unknownInterp = await api.post('/api/tasks', { script: 'true', interpreter: 'perl', targets: { selector: 'all' } });
    expect(unknownInterp.status).toBe(400);
    const viewer = await api.userWithRole('viewer');
    const v = await viewer.post('/api/tasks', { script: 'true', targets: { selector: 'all' } });
    expect(v.status).toBe(403);
    expect((await viewer.get('/api/tasks')).status).toBe(200);
    const operator = await api.userWithRole('operator');
    const t = await createTask(operator, { script: 'echo audited', targets: { selector: 'b-3' } });
    await waitTask(api, t.id);
    const audit = await api.get(`/api/audit?targetId=${t.id}`);
    expect(audit.status).toBe(200);
    const rec = audit.body.items.find((x: any) => x.action === 'task.create');
    expect(rec.actor).toBe(t.createdBy);
    expect(rec.details.scriptSha256).toBe(t.scriptSha256);
    expect(rec.details.targets).toEqual({ selector: 'b-3' });
    expect(t.scriptSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('offline agents are skipped', async () => {
    const a = startAgent(s, { name: 'b-offline' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    await a.stop();
    await api.waitAgent(id, 'offline');
    const t = await createTask(api, { script: 'echo hi', targets: { agentIds: [id, ids['b-1']] } });
    const d = await waitTask(api, t.id);
    const off = d.executions.find((e: any) => e.agentId === id);
    expect(off.status).toBe('skipped');
    expect(off.reason).toMatch(/offline/);
    expect(d.counts).toEqual({ skipped: 1, succeeded: 1 });
  });

  it('concurrency: 1 never runs two at once; maxFailures: 0 stops the rest after the first failure; rerun failed-only', async () => {
    const log = path.join(tmpDir('conc'), 'log');
    fs.writeFileSync(log, '');
    const t = await createTask(api, {
      script: 'echo "start $1" >> "$2"; sleep 0.3; echo "end $1" >> "$2"',
      args: ['$MUSTER_EXECUTION_ID', log],
      targets: { selector: 'b-1,b-2,b-3' },
      concurrency: 1,
    });
    const d = await waitTask(api, t.id);
    expect(d.status).toBe('succeeded');
    const lines = fs.readFileSync(log, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(6);
    for (let i = 0; i < 6; i += 2) {
      expect(lines[i]).toMatch(/^start/);
      expect(lines[i + 1]).toMatch(/^end/);
    }
    const ex = [...d.executions].sort((a: any, b: any) => Date.parse(a.startedAt) - Date.parse(b.startedAt));
    for (let i = 1; i < ex.length; i++) expect(Date.parse(ex[i].startedAt)).toBeGreaterThanOrEqual(Date.parse(ex[i - 1].finishedAt));

    const f = await createTask(api, { script: 'exit 1', targets: { selector: 'b-1,b-2,b-3' }, concurrency: 1, maxFailures: 0 });
    const fd = await waitTask(api, f.id);
    expect(fd.status).toBe('failed');
    expect(fd.counts).toEqual({ failed: 1, cancelled: 2 });
    for (const e of fd.executions.filter((x: any) => x.status === 'cancelled')) {
      expect(e.reason).toMatch(/maxFailures/);
      expect(e.startedAt).toBeNull();
    }
    const rr = await api.post(`/api/tasks/${fd.id}/rerun`, {});
    expect(rr.status).toBe(201);
    expect(rr.body.executions).toHaveLength(1);
    expect(rr.body.rerunOf).toBe(fd.id);
    const failedAgent = fd.executions.find((x: any) => x.status === 'failed').agentId;
    expect(rr.body.executions[0].agentId).toBe(failedAgent);
    await waitTask(api, rr.body.id);
    const pct = await createTask(api, { script: 'true', targets: { selector: 'b-1,b-2,b-3' }, concurrency: '50%', maxFailures: '10%' });
    expect((await waitTask(api, pct.id)).status).toMatch(/succeeded|failed/);
  });

  it('maxExecutionsPerAgent: a second execution on a busy agent waits as pending, then runs', async () => {
    const dir = tmpDir('per-agent');
    const gate = path.join(dir, 'gate');
    const first = await createTask(api, { script: 'while [ ! -e "$1" ]; do sleep 0.05; done; echo first', args: [gate], targets: { agentIds: [ids['b-1']] } });
    await waitFor(async () => (await api.get(`/api/tasks/${first.id}`)).body.executions[0].status === 'running', 'first running');
    const second = await createTask(api, { script: 'echo second', targets: { agentIds: [ids['b-1']] } });
    await new Promise((r) => setTimeout(r, 700));
    expect((await api.get(`/api/tasks/${second.id}`)).body.executions[0].status).toBe('pending');
    fs.writeFileSync(gate, '');
    const d2 = await waitTask(api, second.id);
    expect(d2.executions[0].status).toBe('succeeded');
    const d1 = await waitTask(api, first.id);
    expect(Date.parse(d2.executions[0].startedAt)).toBeGreaterThanOrEqual(Date.parse(d1.executions[0].finishedAt));
  });

  it('cancel: pending executions cancelled, running ones killed (whole tree) and reported cancelled', async () => {
    const pids = path.join(tmpDir('cancel'), 'pids');
    const t = await createTask(api, {
      script: 'echo $$ >> "$1"; sleep 300 & echo $! >> "$1"; setsid sleep 301 & echo $! >> "$1"; echo started; wait',
      args: [pids],
      targets: { agentIds: [ids['b-3']] },
    });
    await waitFor(() => fs.existsSync(pids) && fs.readFileSync(pids, 'utf8').trim().split('\n').length >= 3, 'script pids');
    const procs = fs.readFileSync(pids, 'utf8').trim().split('\n').map(Number);
    expect(procs.every(alive)).toBe(true);
    const c = await api.post(`/api/tasks/${t.id}/cancel`, {});
    expect(c.status).toBe(200);
    const d = await waitTask(api, t.id);
    expect(d.status).toBe('cancelled');
    expect(d.executions[0].status).toBe('cancelled');
    await waitFor(() => procs.every((p) => !alive(p)), 'every process of the cancelled script to be gone', 15_000);
    const again = await api.post(`/api/tasks/${t.id}/cancel`, {});
    expect(again.status).toBe(409);
    const audit = await api.get(`/api/audit?targetId=${t.id}&action=task.cancel`);
    expect(audit.body.items.map((x: any) => [x.action, x.actor, x.ok])).toContainEqual(['task.cancel', 'admin', true]);
  });
});
