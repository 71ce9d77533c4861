/**
 * Script library (issue 13): versioned, parameterised scripts run on real agents; parameters arrive
 * as MUSTER_PARAM_* environment variables byte for byte (never spliced into the script), secret
 * values never leave the API or the audit, roles, and the migration up and down. SQLite and MariaDB.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrationSource, migrations } from '../../migrations/index.js';
import { outputText, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, createMysqlDatabase, databases, startAgent, startServer, tmpDir, type TestServer } from '../helpers/harness.js';

const dbs = await databases();

const HOSTILE = `$(id) \`id\` 'single' "double" ; echo pwned; | & > /tmp/x \\ \${HOME}\nsecond line\n\ttab %s %n`;
const SECRET = `s3cr3t-$(whoami)-"'-value`;
const BODY = [
  `printf 'msg=[%s]\\n' "$MUSTER_PARAM_MSG"`,
  `printf 'count=%s dry=%s mode=%s\\n' "$MUSTER_PARAM_COUNT" "$MUSTER_PARAM_DRY_RUN" "$MUSTER_PARAM_MODE"`,
  // Only a hash of the secret is in the body: the body is shown by the API, the secret never is.
  `printf 'secret=%s\\n' "$([ "$(printf '%s' "$MUSTER_PARAM_TOKEN" | sha256sum | cut -c1-64)" = "${createHash('sha256').update(SECRET).digest('hex')}" ] && echo ok || echo no)"`,
].join('\n');

describe.each(dbs)('script library (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  let operator: Api;
  let viewer: Api;
  let scriptId: string;

  beforeAll(async () => {
    s = await startServer({ db });
    api = await Api.login(s.url);
    operator = await api.userWithRole('operator', 'op-one');
    viewer = await api.userWithRole('viewer');
    for (const name of ['lib-1', 'lib-2']) {
      const a = startAgent(s, { name });
      await api.waitAgent(await agentId(a), 'online');
    }
  });
  afterAll(cleanup);

  it('creates a script with typed parameters; bad definitions are 400, a taken name 409, viewers 403', async () => {
    const body = {
      name: 'hostile-echo',
      description: 'prints its parameters',
      interpreter: 'bash',
      tags: ['demo'],
      body: BODY,
      params: [
        { name: 'msg', type: 'string', required: true, help: 'anything at all' },
        { name: 'count', type: 'number', default: 3, min: 1, max: 10, integer: true },
        { name: 'dry_run', type: 'boolean', default: true },
        { name: 'mode', type: 'choice', choices: ['fast', 'safe'], default: 'safe' },
        { name: 'token', type: 'secret', required: true },
      ],
    };
    expect((await viewer.post('/api/scripts', body)).status).toBe(403);
    const r = await operator.post('/api/scripts', body);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ name: 'hostile-echo', owner: 'op-one', version: 1, latestVersion: 1, tags: ['demo'] });
    scriptId = r.body.id;
    expect((await operator.post('/api/scripts', body)).status).toBe(409);

    const bad = async (params: unknown[], re: RegExp) => {
      const x = await operator.post('/api/scripts', { ...body, name: `bad-${Math.random().toString(36).slice(2, 7)}`, params });
      expect(x.status).toBe(400);
      expect(x.body.error.code).toBe('bad_request');
      expect(x.body.error.message).toMatch(re);
    };
    await bad([{ name: 'mode', type: 'choice', choices: ['a'], default: 'b' }], /must be one of a/);
    await bad(
      [
        { name: 'x', type: 'string' },
        { name: 'X', type: 'number' },
      ],
      /duplicate parameter X/,
    );
    await bad([{ name: 'tok', type: 'secret', default: 'leak' }], /default/);
    await bad([{ name: 'bad-name', type: 'string' }], /parameter names/);
    await bad([{ name: 'n', type: 'number', default: 'x' }], /default/);

    const list = await viewer.get('/api/scripts?q=hostile');
    expect(list.status).toBe(200);
    expect(list.body.items.map((x: any) => x.name)).toEqual(['hostile-echo']);
    expect(list.body.items[0].body).toBeUndefined();
    expect((await viewer.get('/api/scripts/hostile-echo')).body.id).toBe(scriptId);
  });

  it('quoting-hostile parameter values reach the script literally, as environment variables', async () => {
    const r = await operator.post('/api/tasks', {
      scriptId,
      params: { msg: HOSTILE, token: SECRET, count: '7', dry_run: false },
      targets: { selector: 'lib-1,lib-2' },
    });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ scriptId, scriptVersion: 1, scheduleId: null });
    const d = await waitTask(operator, r.body.id);
    expect(d.counts).toEqual({ succeeded: 2 });
    for (const e of d.executions) {
      const out = await outputText(operator, e.id);
      expect(out).toBe(`msg=[${HOSTILE}]\ncount=7 dry=false mode=safe\nsecret=ok\n`);
      expect(out).not.toMatch(/uid=|^pwned/m);
    }
    // The script text is the stored body, untouched by the values.
    expect(d.script).not.toContain('pwned');
    expect(d.env).toEqual({ MUSTER_PARAM_MSG: HOSTILE, MUSTER_PARAM_COUNT: '7', MUSTER_PARAM_DRY_RUN: 'false', MUSTER_PARAM_MODE: 'safe' });
    expect(d.secretEnv).toEqual(['MUSTER_PARAM_TOKEN']);

    // The secret is in no API answer: the task, the task list, the script's history, the audit.
    const secretish = SECRET.slice(0, 12);
    for (const p of [`/api/tasks/${r.body.id}`, '/api/tasks?limit=100', `/api/scripts/${scriptId}/tasks`, '/api/audit?limit=200', `/api/scripts/${scriptId}`]) {
      const x = await api.get(p);
      expect(x.status, p).toBe(200);
      expect(JSON.stringify(x.body), p).not.toContain(secretish);
    }
    expect(JSON.stringify(r.body)).not.toContain(secretish);
    const audit = await api.get(`/api/audit?targetId=${scriptId}&action=script.run`);
    expect(audit.body.items[0].details).toMatchObject({ version: 1, taskId: r.body.id, secretParams: 1, params: { msg: HOSTILE, count: '7' } });
    // Rerun keeps the secret (write-only, still not shown).
    const rr = await operator.post(`/api/tasks/${r.body.id}/rerun`, { all: true });
    expect(rr.status).toBe(201);
    const d2 = await waitTask(operator, rr.body.id);
    expect(d2).toMatchObject({ scriptId, scriptVersion: 1, secretEnv: ['MUSTER_PARAM_TOKEN'], counts: { succeeded: 2 } });
    expect(await outputText(operator, d2.executions[0].id)).toContain('secret=ok');
    expect(JSON.stringify(d2)).not.toContain(secretish);
  });

  it('run-time validation: unknown, missing, mistyped and out-of-range parameters are 400; viewers may not run', async () => {
    const run = (u: Api, params: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      u.post('/api/tasks', { scriptId, params, targets: { selector: 'lib-1' }, ...extra });
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ msg: 'x', token: 't', nope: 1 }, /unknown parameter\(s\): nope/],
      [{ token: 't' }, /msg: required/],
      [{ msg: 'x', token: 't', count: 'many' }, /count: must be a number/],
      [{ msg: 'x', token: 't', count: 11 }, /count: must be at most 10/],
      [{ msg: 'x', token: 't', count: 2.5 }, /count: must be an integer/],
      [{ msg: 'x', token: 't', dry_run: 'yes' }, /dry_run: must be true or false/],
      [{ msg: 'x', token: 't', mode: 'reckless' }, /mode: must be one of fast, safe/],
      [{ msg: 1, token: 't' }, /msg: must be a string/],
    ];
    for (const [params, re] of cases) {
      const x = await run(operator, params);
      expect(x.status, JSON.stringify(params)).toBe(400);
      expect(x.body.error.message).toMatch(re);
    }
    expect((await run(operator, { msg: 'x', token: 't' }, { version: 9 })).status).toBe(400);
    expect((await operator.post('/api/tasks', { scriptId: 'no-such-script', targets: { selector: 'lib-1' } })).status).toBe(404);
    expect((await run(viewer, { msg: 'x', token: 't' })).status).toBe(403);
    // An ad-hoc task still goes to exec.
    const adhoc = await operator.post('/api/tasks', { script: 'echo adhoc', targets: { selector: 'lib-1' } });
    expect(adhoc.status).toBe(201);
    expect(adhoc.body.scriptId).toBeNull();
  });

  it('every edit is a new version; older versions stay readable and runnable; only the owner or an admin edits', async () => {
    const other = await api.userWithRole('operator');
    const denied = await other.req('PUT', `/api/scripts/${scriptId}`, { body: 'echo hijacked' });
    expect(denied.status).toBe(403);
    const v2 = await operator.req('PUT', `/api/scripts/${scriptId}`, {
      body: 'echo "v2 $MUSTER_PARAM_MSG"',
      params: [{ name: 'msg', type: 'string', default: 'hi' }],
      baseVersion: 1,
    });
    expect(v2.status).toBe(200);
    expect(v2.body).toMatchObject({ version: 2, latestVersion: 2 });
    const stale = await operator.req('PUT', `/api/scripts/${scriptId}`, { body: 'echo stale', baseVersion: 1 });
    expect(stale.status).toBe(409);
    const same = await operator.req('PUT', `/api/scripts/${scriptId}`, { body: 'echo "v2 $MUSTER_PARAM_MSG"' });
    expect(same.body.version).toBe(2); // nothing changed: no new version
    const v3 = await api.req('PUT', `/api/scripts/${scriptId}`, { description: 'edited by an admin' });
    expect(v3.body).toMatchObject({ version: 3, owner: 'op-one', description: 'edited by an admin' });

    const versions = await viewer.get(`/api/scripts/${scriptId}/versions`);
    expect(versions.body.total).toBe(3);
    expect(versions.body.items.map((v: any) => [v.version, v.versionCreatedBy])).toEqual([
      [3, 'admin'],
      [2, 'op-one'],
      [1, 'op-one'],
    ]);
    const v1 = await viewer.get(`/api/scripts/${scriptId}/versions/1`);
    expect(v1.body.body).toContain('msg=[%s]');
    expect((await viewer.get(`/api/scripts/${scriptId}/versions/7`)).status).toBe(404);
    expect((await viewer.get(`/api/scripts/${scriptId}/versions/x`)).status).toBe(400);

    const latest = await operator.post('/api/tasks', { scriptId, targets: { selector: 'lib-1' } });
    expect(latest.body.scriptVersion).toBe(3);
    const dl = await waitTask(operator, latest.body.id);
    expect(await outputText(operator, dl.executions[0].id)).toBe('v2 hi\n');
    const old = await operator.post('/api/tasks', { scriptId, version: 1, params: { msg: 'old', token: SECRET }, targets: { selector: 'lib-1' } });
    expect(old.body.scriptVersion).toBe(1);
    const dold = await waitTask(operator, old.body.id);
    expect(await outputText(operator, dold.executions[0].id)).toContain('msg=[old]');

    const hist = await viewer.get(`/api/scripts/${scriptId}/tasks`);
    expect(hist.body.items.map((t: any) => t.scriptVersion)).toEqual(expect.arrayContaining([1, 3]));

    const audit = await api.get(`/api/audit?targetId=${scriptId}`);
    const actions = audit.body.items.map((x: any) => `${x.action}:${x.ok}`);
    expect(actions).toEqual(expect.arrayContaining(['script.create:true', 'script.update:true', 'script.update:false', 'script.run:true']));

    expect((await other.delete(`/api/scripts/${scriptId}`)).status).toBe(403);
    const tmp = await other.post('/api/scripts', { name: 'to-delete', body: 'true' });
    expect((await other.delete('/api/scripts/to-delete')).status).toBe(204);
    expect((await viewer.get(`/api/scripts/${tmp.body.id}`)).status).toBe(404);
  });

  it('the migration goes down and up again without touching existing tasks', async () => {
    let k: Knex;
    let drop = async () => {};
    if (db === 'mysql') {
      const m = await createMysqlDatabase();
      drop = m.drop;
      const u = new URL(m.url);
      k = knexFactory({ client: 'mysql2', connection: { host: u.hostname, port: Number(u.port), user: 'root', password: '', database: u.pathname.slice(1) } });
    } else {
      k = knexFactory({
        client: 'better-sqlite3',
        connection: { filename: path.join(tmpDir('mig'), 'm.db') },
        useNullAsDefault: true,
        pool: {
          afterCreate: (c: any, done: any) => {
            c.pragma('foreign_keys = ON');
            done(null, c);
          },
        },
      });
    }
    const mine = '202611301600_create_script_tables';
    try {
      for (const [name] of migrations) {
        if (name === mine) break;
        await k.migrate.up({ migrationSource, name });
      }
      await k('tasks').insert({
        id: 't1',
        script: 'true',
        script_sha256: 'x',
        interpreter: 'bash',
        args: '[]',
        env: '{}',
        timeout_sec: 1,
        targets: '{}',
        created_by: 'a',
        created_at: 1,
        status: 'succeeded',
      });
      await k('executions').insert({ id: 'e1', task_id: 't1', agent_id: 'a1', agent_name: 'a', status: 'succeeded' });
      await k.migrate.up({ migrationSource, name: mine });
      expect(await k.schema.hasTable('scripts')).toBe(true);
      expect(await k.schema.hasColumn('tasks', 'script_version')).toBe(true);
      await k.migrate.down({ migrationSource, name: mine });
      expect(await k.schema.hasTable('scripts')).toBe(false);
      expect(await k.schema.hasTable('script_versions')).toBe(false);
      expect(await k.schema.hasColumn('tasks', 'script_id')).toBe(false);
      expect(await k('executions').count({ n: '*' })).toEqual([{ n: 1 }]);
      await k.migrate.latest({ migrationSource });
      await k.migrate.rollback({ migrationSource }, true);
      expect(await k.schema.hasTable('tasks')).toBe(false);
      await k.migrate.latest({ migrationSource });
      expect(await k.schema.hasTable('scripts')).toBe(true);
    } finally {
      await k.destroy();
      await drop();
    }
  });
});
