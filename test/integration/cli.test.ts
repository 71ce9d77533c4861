import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, Api, ROOT, agentId, cleanup, startAgent, startServer, tmpDir, type TestServer } from '../helpers/harness.js';

const CLI_JS = path.join(ROOT, 'dist', 'cli.js');

interface CliResult { code: number | null; stdout: string; stderr: string }

describe('muster CLI against a real server and agents', () => {
  let s: TestServer;
  let api: Api;
  let cfgFile: string;
  const ids: Record<string, string> = {};

  /** Runs `node dist/cli.js ...args` with the test's config file and no inherited MUSTER_* login. */
  function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MUSTER_')));
    const p = spawn(process.execPath, [CLI_JS, ...args], { env: { ...base, MUSTER_CLI_CONFIG: cfgFile, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    return new Promise((resolve) => p.once('close', (code) => resolve({ code, stdout, stderr })));
  }

  beforeAll(async () => {
    s = await startServer();
    api = await Api.login(s.url);
    cfgFile = path.join(tmpDir('cli'), 'nested', 'cli.json');
    for (const [name, role] of [['cli-a', 'web'], ['cli-b', 'db']] as const) {
      const a = startAgent(s, { name, labels: { role } });
      ids[name] = await agentId(a);
      await api.waitAgent(ids[name]!, 'online');
    }
  });
  afterAll(cleanup);

  it('refuses to work before login, and rejects a wrong password', async () => {
    const r = await cli(['agents']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/not logged in/);
    const bad = await cli(['login', '--server', s.url, '--user', 'admin', '--password', 'wrong-password']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/wrong username or password \(unauthorized, HTTP 401\)/);
    expect(fs.existsSync(cfgFile)).toBe(false);
  });

  it('login stores {server, token} with mode 0600, and the token works for the API', async () => {
    const r = await cli(['login', '--server', `${s.url}/`, '--user', 'admin'], { MUSTER_PASSWORD: ADMIN_PASSWORD });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/logged in to .* as admin/);
    expect(fs.statSync(cfgFile).mode & 0o777).toBe(0o600);
    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as { server: string; token: string };
    expect(cfg.server).toBe(s.url);
    const me = await fetch(`${s.url}/api/auth/me`, { headers: { authorization: `Bearer ${cfg.token}` } });
    expect(me.status).toBe(200);
    expect(((await me.json()) as { via: string }).via).toBe('token');
  });

  it('agents: JSON, table, filters, and MUSTER_SERVER + MUSTER_TOKEN without a config file', async () => {
    const j = await cli(['agents', '--json']);
    expect(j.code).toBe(0);
    const list = JSON.parse(j.stdout) as { id: string; name: string; status: string; labels: Record<string, string> }[];
    expect(list.map((a) => [a.name, a.status, a.labels['role']])).toEqual([['cli-a', 'online', 'web'], ['cli-b', 'online', 'db']]);
    expect(list.map((a) => a.id)).toEqual([ids['cli-a'], ids['cli-b']]);

    const t = await cli(['agents', '--selector', 'labels.role == "db"']);
    expect(t.code).toBe(0);
    const lines = t.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATUS\s+HOSTNAME\s+VERSION\s+LABELS$/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^cli-b\s+online\s+\S+\s+\S+\s+role=db$/);

    const off = await cli(['agents', '--status', 'offline', '--json']);
    expect(JSON.parse(off.stdout)).toEqual([]);

    const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as { token: string };
    const viaEnv = await cli(['agents', '--json'], { MUSTER_CLI_CONFIG: path.join(tmpDir('cli-none'), 'absent.json'), MUSTER_SERVER: s.url, MUSTER_TOKEN: cfg.token });
    expect(viaEnv.code).toBe(0);
    expect(JSON.parse(viaEnv.stdout)).toHaveLength(2);
  });

  it('run on one agent: output shown with the agent name, exit status non-zero when the script fails', async () => {
    const r = await cli(['run', '--agents', 'cli-a', '-e', 'echo hi; exit 3']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('cli-a | hi\n');
    expect(r.stdout).toMatch(/cli-a : failed \(exit 3/);
    expect(r.stdout).toMatch(/task \S+ failed: 1 failed/);
    expect(r.stdout).not.toContain('cli-b');
  });

  it('run on both agents by selector with --arg and a script file: exit 0; --json prints the final task; tasks and task list it', async () => {
    const dir = tmpDir('cli-script');
    const file = path.join(dir, 'hello.sh');
    fs.writeFileSync(file, 'echo "hello $1 from $MUSTER_AGENT_NAME"\necho warn >&2\n');
    const r = await cli(['run', '--selector', 'all', '--arg', 'world', file]);
    expect(r.stderr).toMatch(/task \S+: 2 agent\(s\)/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^cli-a \| hello world/m);
    expect(r.stdout).toMatch(/^cli-b \| hello world/m);
    expect(r.stdout).toMatch(/^cli-a \| warn$/m);
    expect(r.stdout).toMatch(/task \S+ succeeded: 2 succeeded/);

    const j = await cli(['run', '--agents', `cli-a,${ids['cli-b']}`, '--json', '-e', 'exit 0']);
    expect(j.code).toBe(0);
    const t = JSON.parse(j.stdout) as { id: string; status: string; executions: { agentName: string; status: string; exitCode: number }[] };
    expect(t.status).toBe('succeeded');
    expect(t.executions.map((e) => [e.agentName, e.status, e.exitCode]).sort()).toEqual([['cli-a', 'succeeded', 0], ['cli-b', 'succeeded', 0]]);

    const list = await cli(['tasks', '--limit', '10', '--json']);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as { id: string }[]).map((x) => x.id)).toContain(t.id);
    const table = await cli(['tasks']);
    expect(table.stdout).toMatch(new RegExp(`^${t.id}\\s+succeeded\\s.*\\s2 succeeded\\s+2 agent id\\(s\\)$`, 'm'));
    const one = await cli(['task', t.id]);
    expect(one.code).toBe(0);
    expect(one.stdout).toContain(`task ${t.id} succeeded: 2 succeeded`);
    expect(one.stdout).toMatch(/^cli-a\s+succeeded\s+0\s/m);
    const missing = await cli(['task', 'no-such-task']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found \(not_found, HTTP 404\)/);
  });

  it('a selector syntax error is printed with its position; usage errors exit 2', async () => {
    const r = await cli(['run', '--selector', 'labels.role == ', '-e', 'true']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/position 15/);
    expect(r.stderr).toContain('(selector_syntax, HTTP 400)');
    expect(r.stderr).toContain(`  labels.role == \n  ${' '.repeat(15)}^`);
    const a = await cli(['agents', '--selector', '(all']);
    expect(a.code).toBe(1);
    expect(a.stderr).toContain('selector_syntax');

    const u1 = await cli(['run', '-e', 'true']);
    expect(u1.code).toBe(2);
    expect(u1.stderr).toMatch(/exactly one of --selector/);
    const u2 = await cli(['run', '--selector', 'all']);
    expect(u2.code).toBe(2);
    const u3 = await cli(['agents', '--bogus']);
    expect(u3.code).toBe(2);
    const u4 = await cli(['run', '--agents', 'nobody', '-e', 'true']);
    expect(u4.code).toBe(2);
    expect(u4.stderr).toMatch(/unknown agent\(s\): nobody/);
  });
});
