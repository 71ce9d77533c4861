/**
 * The `muster` CLI driven as a subprocess (the bundled dist/cli.js, copied alone into a bin dir
 * as an operator would install it) against a real server and real agents: login, live `exec`
 * streaming over the console socket, Ctrl-C, the other resources, completion, and `muster term`
 * through a real TTY (node-pty spawns the CLI). The README's CLI examples are run verbatim.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as pty from 'node-pty';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, Api, ROOT, agentId, cleanup, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

const CLI_JS = path.join(ROOT, 'dist', 'cli.js');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}
interface Running {
  proc: ReturnType<typeof spawn>;
  stdout: () => string;
  stderr: () => string;
  done: Promise<CliResult>;
}

/** The fenced block after the README's `cli-examples` marker, one command per line. */
function readmeExamples(): string[] {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const m = /<!-- cli-examples[^>]*-->\s*```sh\n([\s\S]*?)```/.exec(readme);
  if (!m) throw new Error('README has no cli-examples block');
  return m[1]!
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l && !l.startsWith('#'));
}

describe('muster CLI against a real server and agents', () => {
  let s: TestServer;
  let api: Api;
  let cfgFile: string;
  let bin: string;
  let token = '';
  const ids: Record<string, string> = {};

  /** The environment of a CLI run: the installed copy first on PATH, no inherited MUSTER_* login. */
  function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MUSTER_')));
    return { ...base, PATH: `${bin}:${process.env['PATH'] ?? ''}`, MUSTER_CLI_CONFIG: cfgFile, NO_COLOR: '', ...extra };
  }

  function start(args: string[], extra: Record<string, string> = {}, shell = false): Running {
    const proc = shell
      ? spawn('bash', ['-c', args[0]!], { env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(path.join(bin, 'muster'), args, { env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const done = new Promise<CliResult>((resolve) => proc.once('close', (code) => resolve({ code, stdout, stderr })));
    return { proc, stdout: () => stdout, stderr: () => stderr, done };
  }

  const cli = (args: string[], extra: Record<string, string> = {}): Promise<CliResult> => start(args, extra).done;

  beforeAll(async () => {
    s = await startServer();
    api = await Api.login(s.url);
    const dir = tmpDir('cli');
    cfgFile = path.join(dir, 'nested', 'cli.json');
    // Installed the documented way: the one bundled file, alone, on the PATH. Outside the checkout
    // (test/.tmp would find the repository's node_modules by walking up), so a package the bundle
    // did not include would fail here. mkdtemp makes the name unique; afterAll removes it.
    bin = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-cli-bin-'));
    execFileSync('install', ['-m', '755', CLI_JS, path.join(bin, 'muster')]);
    for (const [name, role] of [
      ['web-01', 'web'],
      ['db-01', 'db'],
    ] as const) {
      const a = startAgent(s, { name, labels: { role } });
      ids[name] = await agentId(a);
      await api.waitAgent(ids[name]!, 'online');
    }
  });
  afterAll(async () => {
    await cleanup();
    if (bin) fs.rmSync(bin, { recursive: true, force: true });
  });

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
    token = cfg.token;
    const me = await fetch(`${s.url}/api/auth/me`, { headers: { authorization: `Bearer ${cfg.token}` } });
    expect(me.status).toBe(200);
    expect(((await me.json()) as { via: string }).via).toBe('token');
  });

  it('the README examples run as written', async () => {
    const lines = readmeExamples();
    expect(lines.length).toBeGreaterThan(8);
    const results: Array<[string, CliResult]> = [];
    for (const line of lines) {
      // The one thing that differs from a real installation: where the server is.
      const r = await start([line.replaceAll('http://muster.example.com:8080', s.url)], { MUSTER_PASSWORD: ADMIN_PASSWORD }, true).done;
      results.push([line, r]);
      expect(r.code, `${line}\n${r.stdout}\n${r.stderr}`).toBe(0);
    }
    const out = (re: RegExp): string => results.find(([l]) => re.test(l))![1].stdout;
    expect(out(/^muster agents --selector/)).toMatch(/^web-01\s+online\s/m);
    expect(out(/^muster exec --selector 'labels.role/)).toMatch(/^web-01 \| hello from /m);
    const two = out(/^muster run --agent web-01/);
    expect(two).toMatch(/^web-01 \| hi$/m);
    expect(two).toMatch(/^db-01  \| hi$/m);
    expect(two).toMatch(/^db-01  ! oops$/m);
    expect(two).toMatch(/task \S+ succeeded: 2 succeeded/);
    const events = out(/--json/)
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string });
    expect(events[0]!.type).toBe('task');
    expect(events.at(-1)).toMatchObject({ type: 'summary', status: 'succeeded', ok: true });
  });

  it('agents: JSON, table, filters, and flags or MUSTER_SERVER + MUSTER_TOKEN without a config file', async () => {
    const j = await cli(['agents', '--output', 'json']);
    expect(j.code).toBe(0);
    const list = JSON.parse(j.stdout) as { id: string; name: string; status: string; labels: Record<string, string> }[];
    expect(list.map((a) => [a.name, a.status, a.labels['role']]).sort()).toEqual([
      ['db-01', 'online', 'db'],
      ['web-01', 'online', 'web'],
    ]);

    const t = await cli(['agents', '--selector', 'labels.role == "db"']);
    expect(t.code).toBe(0);
    const lines = t.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATUS\s+HOSTNAME\s+VERSION\s+LABELS$/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^db-01\s+online\s+\S+\s+\S+\s+role=db$/);

    const off = await cli(['agents', '--status', 'offline', '-o', 'json']);
    expect(JSON.parse(off.stdout)).toEqual([]);
    expect((await cli(['agents', '-o', 'yaml'])).code).toBe(2);

    const none = path.join(tmpDir('cli-none'), 'absent.json');
    const viaEnv = await cli(['agents', '--json'], { MUSTER_CLI_CONFIG: none, MUSTER_SERVER: s.url, MUSTER_TOKEN: token });
    expect(viaEnv.code).toBe(0);
    expect(JSON.parse(viaEnv.stdout)).toHaveLength(2);
    const viaFlags = await cli(['agents', '--json', '--server', s.url, '--token', token], { MUSTER_CLI_CONFIG: none, MUSTER_TOKEN: 'wrong' });
    expect(viaFlags.code).toBe(0);
    expect(viaFlags.stderr).toMatch(/warning: --token puts the token on the command line.*MUSTER_TOKEN, --token-file/);
    expect(viaEnv.stderr).toBe('');
    const wrong = await cli(['agents', '--token', 'not-a-token']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/HTTP 401/);

    // From a file (first line) or stdin: nothing on the command line, no warning.
    const tokFile = path.join(tmpDir('cli-tokfile'), 'token');
    fs.writeFileSync(tokFile, `${token}\n`, { mode: 0o600 });
    const viaFile = await cli(['agents', '--json', '--server', s.url, '--token-file', tokFile], { MUSTER_CLI_CONFIG: none });
    expect(viaFile.code, viaFile.stderr).toBe(0);
    expect(viaFile.stderr).toBe('');
    expect(JSON.parse(viaFile.stdout)).toHaveLength(2);
    const viaStdin = await start([`printf '%s\\n' "$TOK" | muster agents --json --server ${s.url} --token -`], { MUSTER_CLI_CONFIG: none, TOK: token }, true)
      .done;
    expect(viaStdin.code, viaStdin.stderr).toBe(0);
    expect(viaStdin.stderr).toBe('');
    expect(JSON.parse(viaStdin.stdout)).toHaveLength(2);
    const missing = await cli(['agents', '--server', s.url, '--token-file', `${tokFile}.absent`], { MUSTER_CLI_CONFIG: none });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read the token from .*absent/);
    const both = await cli(['agents', '--token', token, '--token-file', tokFile]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/either --token or --token-file/);
  });

  it('exec streams output while the script still runs, then the result and summary; exit 0 only if all succeeded', async () => {
    const gate = path.join(tmpDir('cli-gate'), 'go');
    const r = start(['exec', '--selector', 'all', '-e', `echo first; while [ ! -e ${gate} ]; do sleep 0.1; done; echo second; echo warn >&2`]);
    // Both hosts' first line arrives while the scripts wait for the gate: output is live.
    await waitFor(() => /^web-01 \| first$/m.test(r.stdout()) && /^db-01  \| first$/m.test(r.stdout()), 'first lines, live', 30_000);
    expect(r.stdout()).not.toContain('second');
    expect(r.stdout()).not.toMatch(/task \S+ /);
    fs.writeFileSync(gate, '');
    const res = await r.done;
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/^task \S+: 2 agent\(s\)$/m);
    expect(res.stdout).toMatch(/^web-01 \| second$/m);
    expect(res.stdout).toMatch(/^web-01 ! warn$/m);
    expect(res.stdout).toMatch(/^db-01  : succeeded \(exit 0, /m);
    expect(res.stdout.trimEnd().split('\n').at(-1)).toMatch(/^task \S+ succeeded: 2 succeeded$/);

    const f = await cli(['run', '--agent', 'web-01', '-e', 'echo hi; exit 3']);
    expect(f.code).toBe(1);
    expect(f.stdout).toContain('web-01 | hi\n');
    expect(f.stdout).toMatch(/web-01 : failed \(exit 3/);
    expect(f.stdout).toMatch(/task \S+ failed: 1 failed/);
    expect(f.stdout).not.toContain('db-01');
  });

  it('exec --color always: host names in their colour, the stderr mark in red', async () => {
    const r = await cli(['exec', '--agent', 'web-01', '--agent', 'db-01', '--color', 'always', '-e', 'echo x; echo y >&2']);
    expect(r.code).toBe(0);
    // Colours are given in host-name order: db-01 first (cyan), web-01 second (yellow).
    expect(r.stdout).toContain('\x1b[36mdb-01 \x1b[0m | x\n');
    expect(r.stdout).toContain('\x1b[33mweb-01\x1b[0m \x1b[1;31m!\x1b[0m y\n');
    const plain = await cli(['exec', '--agent', 'web-01', '-e', 'echo x']);
    expect(plain.stdout).not.toContain('\x1b[');
  });

  it('exec prints every line of a large output, in order, complete (live chunks plus anything read back)', async () => {
    const r = await cli(['exec', '--agent', 'db-01', '-e', 'seq 1 30000; printf "no newline at the end"']);
    expect(r.code).toBe(0);
    const lines = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('db-01 | '))
      .map((l) => l.slice(8));
    expect(lines.slice(0, 30000)).toEqual(Array.from({ length: 30000 }, (_, i) => String(i + 1)));
    expect(lines[30000]).toBe('no newline at the end');
  });

  it('exec --json: one JSON object per event', async () => {
    const r = await cli(['exec', '--json', '--agent', 'web-01', '--agent', 'db-01', '-e', 'echo out; echo err >&2; exit 0']);
    expect(r.code).toBe(0);
    const ev = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, any>);
    expect(ev[0]).toMatchObject({ type: 'task', task: { executions: expect.any(Array) } });
    expect(
      ev
        .filter((e) => e.type === 'output')
        .map((e) => `${e.agent} ${e.stream} ${e.text}`)
        .sort(),
    ).toEqual(['db-01 stderr err', 'db-01 stdout out', 'web-01 stderr err', 'web-01 stdout out']);
    expect(
      ev
        .filter((e) => e.type === 'execution' && e.execution.status === 'succeeded')
        .map((e) => e.agent)
        .sort(),
    ).toEqual(['db-01', 'web-01']);
    expect(ev.at(-1)).toEqual({ type: 'summary', taskId: ev[0]!.task.id, status: 'succeeded', counts: { succeeded: 2 }, total: 2, ok: true });
  });

  it('exec options reach the task: --env, --arg, --timeout, --concurrency, --max-failures, --queue, --script-file, stdin', async () => {
    const file = path.join(tmpDir('cli-script'), 'hello.sh');
    fs.writeFileSync(file, 'echo "hello $1 $GREETING"\n');
    const r = await cli([
      'exec',
      '--selector',
      'labels.role == "web"',
      '--script-file',
      file,
      '--arg',
      'world',
      '--env',
      'GREETING=hi',
      '--concurrency',
      '1',
      '--max-failures',
      '50%',
      '--queue',
      '--queue-ttl',
      '60',
      '--timeout',
      '30',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^web-01 \| hello world hi$/m);
    const id = /^task (\S+):/m.exec(r.stderr)![1]!;
    const t = (await api.get(`/api/tasks/${id}`)).body;
    expect(t).toMatchObject({
      args: ['world'],
      env: { GREETING: 'hi' },
      concurrency: '1',
      maxFailures: '50%',
      offline: 'queue',
      queueTtlSec: 60,
      timeoutSec: 30,
    });

    const to = await cli(['exec', '--agent', 'web-01', '--timeout', '1', '-e', 'echo started; sleep 30']);
    expect(to.code).toBe(1);
    expect(to.stdout).toMatch(/^web-01 : timeout/m);

    const p = spawn(path.join(bin, 'muster'), ['exec', '--agent', 'db-01', '-'], { env: env(), stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.stdin.end('echo from stdin\n');
    expect(await new Promise((res) => p.once('close', res))).toBe(0);
    expect(out).toMatch(/^db-01 \| from stdin$/m);
  });

  it('Ctrl-C cancels the task and keeps streaming to the end; a second Ctrl-C detaches', async () => {
    const r = start(['exec', '--selector', 'all', '-e', 'echo started; sleep 60']);
    await waitFor(() => (r.stdout().match(/\| started$/gm) ?? []).length === 2, 'both started', 30_000);
    r.proc.kill('SIGINT');
    const res = await r.done;
    expect(res.stderr).toMatch(/cancelling task \S+ \(Ctrl-C again to detach\)/);
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(/^web-01 : cancelled/m);
    expect(res.stdout).toMatch(/task \S+ cancelled: 2 cancelled/);

    // This script ignores SIGTERM, so the cancelled task lasts until the agent's SIGKILL 5 s later.
    const d = start(['exec', '--agent', 'web-01', '-e', 'trap "" TERM; echo started; sleep 60']);
    await waitFor(() => /\| started$/m.test(d.stdout()), 'started', 30_000);
    d.proc.kill('SIGINT');
    await waitFor(() => /cancelling/.test(d.stderr()), 'cancelling');
    d.proc.kill('SIGINT');
    const dres = await d.done;
    expect(dres.code).toBe(130);
    expect(dres.stderr).toMatch(/detached; task \S+ goes on/);
  });

  it('exec ends with a clear error (not a hang) when its token is revoked while it follows a task', async () => {
    const t = (await api.post('/api/tokens', { name: 'short-lived' })).body as { id: number; token: string };
    const r = start(['exec', '--agent', 'web-01', '--token', t.token, '-e', 'echo started; sleep 20']);
    await waitFor(() => /\| started$/m.test(r.stdout()), 'started', 30_000);
    expect((await api.delete(`/api/tokens/${t.id}`)).status).toBe(204);
    const res = await r.done;
    expect(res.code).toBe(1);
    // Whichever notices first (the socket closed with sessionEnded, or the next REST call), the
    // error names the cause; under load the REST call can come first.
    expect(res.stderr).toMatch(/console socket closed|sign in first/);
    expect(res.stderr).toMatch(/HTTP 401/);
  });

  it('tasks, task by unique id prefix, cancel', async () => {
    const created = await api.post('/api/tasks', { script: 'sleep 60', targets: { agentIds: [ids['web-01']] } });
    expect(created.status).toBe(201);
    const id: string = created.body.id;
    const list = await cli(['tasks', '--limit', '10', '--status', 'running', '-o', 'json']);
    expect((JSON.parse(list.stdout) as { id: string }[]).map((x) => x.id)).toContain(id);
    const table = await cli(['tasks']);
    expect(table.stdout).toMatch(new RegExp(`^${id}\\s+running\\s`, 'm'));

    const one = await cli(['task', id.slice(0, 8)]);
    expect(one.code).toBe(0);
    expect(one.stdout).toContain(`task ${id} running`);
    expect(one.stdout).toMatch(/^web-01\s+(dispatched|running)\s/m);
    const c = await cli(['cancel', id.slice(0, 6)]);
    expect(c.code).toBe(0);
    await waitFor(async () => (await api.get(`/api/tasks/${id}`)).body.status === 'cancelled', 'cancelled');
    const again = await cli(['cancel', id]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already cancelled \(conflict, HTTP 409\)/);
    const shown = await cli(['task', id, '--show-output', '-o', 'json']);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id, status: 'cancelled' });

    expect((await cli(['task', 'ffffffff-0000'])).stderr).toMatch(/no task id starts with ffffffff-0000 \(not_found, HTTP 404\)/);
    const bad = await cli(['task', 'xyz!']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not a task id or an id prefix/);
    expect((await api.get('/api/tasks?idPrefix=%25')).status).toBe(400);
  });

  it('the output endpoint reads a range of chunks by sequence number (what exec catches up with)', async () => {
    const r = await cli(['exec', '--agent', 'web-01', '--json', '-e', 'echo a; sleep 0.3; echo b >&2; sleep 0.3; echo c']);
    const execId = (JSON.parse(r.stdout.split('\n')[0]!) as { task: { executions: { id: string }[] } }).task.executions[0]!.id;
    const get = async (q: string) => await fetch(`${s.url}/api/executions/${execId}/output?${q}`, { headers: { authorization: `Bearer ${token}` } });
    const all = await get('fromSeq=0');
    expect(all.headers.get('x-muster-to-seq')).toBe('3');
    expect(await all.text()).toBe('a\nb\nc\n');
    expect(await (await get('fromSeq=1&toSeq=2')).text()).toBe('b\n');
    expect(await (await get('stream=stdout&fromSeq=1')).text()).toBe('c\n');
    expect((await get('fromSeq=-1')).status).toBe(400);
  });

  it('library scripts: --script NAME with --param K=V runs a stored script; its parameters arrive as MUSTER_PARAM_*', async () => {
    const created = await api.post('/api/scripts', {
      name: 'greet',
      body: 'echo "greeting=$MUSTER_PARAM_GREETING times=$MUSTER_PARAM_TIMES"',
      params: [
        { name: 'greeting', type: 'string' },
        { name: 'times', type: 'number', default: 1 },
      ],
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const r = await cli(['exec', '--agent', 'web-01', '--script', 'greet', '--param', 'greeting=hello; $(rm -rf /)', '--param', 'times=3']);
    expect(r.stderr).toMatch(/^task \S+: 1 agent\(s\)$/m);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('web-01 | greeting=hello; $(rm -rf /) times=3\n');
    const list = await cli(['scripts']);
    expect(list.stdout).toMatch(/^NAME\s+VERSION\s+INTERPRETER\s+OWNER\s+PARAMS\s+TAGS$/m);
    expect(list.stdout).toMatch(/^greet\s+1\s+bash\s+admin\s+greeting:string times:number=1\s+-$/m);
    const show = await cli(['scripts', 'show', 'greet']);
    expect(show.stdout).toContain('greet v1 (bash, owner admin)');
    expect(show.stdout).toContain('echo "greeting=$MUSTER_PARAM_GREETING');
    expect((await cli(['scripts', 'show', 'nope'])).code).toBe(1);
    // Versions and their diff, from the command line as in the console.
    const v2 = await api.req('PUT', '/api/scripts/greet', {
      body: 'echo "greeting=$MUSTER_PARAM_GREETING"\necho "times=$MUSTER_PARAM_TIMES"',
      params: [
        { name: 'greeting', type: 'string', default: 'hi' },
        { name: 'times', type: 'number', default: 1 },
      ],
    });
    expect(v2.body.version).toBe(2);
    const versions = await cli(['scripts', 'versions', 'greet']);
    expect(versions.code).toBe(0);
    expect(versions.stdout).toMatch(/^VERSION\s+AUTHOR\s+CREATED\s+BYTES\s+SHA256\s+PARAMS$/m);
    expect(versions.stdout).toMatch(/^2\s+admin\s+\S+\s+\d+\s+[0-9a-f]{12}\s+greeting:string=hi times:number=1$/m);
    expect(versions.stdout.indexOf('\n2 ')).toBeLessThan(versions.stdout.indexOf('\n1 '));
    const diff = await cli(['scripts', 'diff', 'greet', '1']);
    expect(diff.code).toBe(0);
    expect(diff.stdout).toBe(
      [
        '--- greet v1',
        '+++ greet v2',
        '# params: greeting:string times:number=1 -> greeting:string=hi times:number=1',
        '- echo "greeting=$MUSTER_PARAM_GREETING times=$MUSTER_PARAM_TIMES"',
        '+ echo "greeting=$MUSTER_PARAM_GREETING"',
        '+ echo "times=$MUSTER_PARAM_TIMES"',
        '',
      ].join('\n'),
    );
    expect((await cli(['scripts', 'diff', 'greet', '2', '1'])).stdout).toContain('--- greet v2\n+++ greet v1\n');
    expect(JSON.parse((await cli(['scripts', 'diff', 'greet', '1', '2', '-o', 'json'])).stdout)).toMatchObject({ from: 1, to: 2 });
    expect((await cli(['scripts', 'diff', 'greet', 'x'])).code).toBe(2);
    expect((await cli(['scripts', 'diff', 'greet', '1', '7'])).code).toBe(1);
    // The old version still runs.
    const old = await cli(['exec', '--agent', 'web-01', '--script', 'greet', '--script-version', '1', '--param', 'greeting=v1', '--param', 'times=2']);
    expect(old.code).toBe(0);
    expect(old.stdout).toContain('web-01 | greeting=v1 times=2\n');
    const bad = await cli(['exec', '--agent', 'web-01', '--script', 'greet', '--param', 'times=many']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/times: must be a number/);
    expect((await cli(['exec', '--agent', 'web-01', '--script', 'no-such-script'])).stderr).toMatch(/not found \(not_found, HTTP 404\)/);
    const u = await cli(['exec', '--selector', 'all', '--param', 'x=1', '-e', 'true']);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/--param is for library scripts/);
    expect((await cli(['exec', '--selector', 'all', '--script', 'greet', '--env', 'A=1'])).code).toBe(2);
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

    const u1 = await cli(['exec', '-e', 'true']);
    expect(u1.code).toBe(2);
    expect(u1.stderr).toMatch(/exactly one of --selector/);
    expect((await cli(['exec', '--selector', 'all'])).code).toBe(2);
    expect((await cli(['agents', '--bogus'])).code).toBe(2);
    const u4 = await cli(['exec', '--agent', 'nobody', '-e', 'true']);
    expect(u4.code).toBe(2);
    expect(u4.stderr).toMatch(/unknown agent\(s\): nobody/);
    expect((await cli(['exec', '--agent', 'web-01', '--env', 'NOEQUALS', '-e', 'true'])).code).toBe(2);
    expect((await cli(['exec', '--agent', 'web-01', '--concurrency', 'lots', '-e', 'true'])).code).toBe(2);
  });

  it('tokens: create (shown once), list, revoke', async () => {
    const c = await cli(['tokens', 'create', 'ci-job', '-o', 'json']);
    expect(c.code).toBe(0);
    const t = JSON.parse(c.stdout) as { id: number; token: string; prefix: string };
    expect(t.token.startsWith(t.prefix)).toBe(true);
    const l = await cli(['tokens']);
    expect(l.stdout).toMatch(new RegExp(`^${t.id}\\s+ci-job\\s+${t.prefix}…\\s+admin\\s.*\\sno$`, 'm'));
    expect(l.stdout).not.toContain(t.token);
    expect((await cli(['agents', '--token', t.token, '-o', 'json'])).code).toBe(0);
    expect((await cli(['tokens', 'revoke', String(t.id)])).stdout).toBe(`token ${t.id} revoked\n`);
    expect((await cli(['agents', '--token', t.token])).code).toBe(1);
    expect((await cli(['tokens', 'revoke', 'abc'])).code).toBe(2);
    // A read-only, short-lived token: scope and expiry (issue 9, defect 8).
    const ro = JSON.parse((await cli(['tokens', 'create', 'ro-job', '--scope', 'viewer', '--expires-in', '3600', '-o', 'json'])).stdout) as {
      token: string;
      scope: string;
      expiresAt: string;
    };
    expect(ro.scope).toBe('viewer');
    expect(Date.parse(ro.expiresAt)).toBeGreaterThan(Date.now());
    expect((await cli(['tokens'])).stdout).toMatch(/ro-job\s.*\sviewer\s/);
    expect((await cli(['tokens', 'create', 'x', '--scope', 'root'])).code).toBe(2);
  });

  it('rollout: create, status, pause, resume, cancel, list', { timeout: 180_000 }, async () => {
    // Agents with an (empty) install root take part and refuse the package: the rollout machinery still runs.
    for (const name of ['upd-1', 'upd-2']) {
      const a = startAgent(s, { name, labels: { grp: 'upd' }, args: ['--install-root', tmpDir('noinstall')] });
      await api.waitAgent(await agentId(a), 'online');
    }
    const pkgDir = tmpDir('cli-pkg');
    fs.writeFileSync(path.join(pkgDir, 'VERSION'), '9.0.0\n');
    const file = path.join(tmpDir('cli-pkgout'), 'muster-agent-9.0.0-linux-x64.tar.gz');
    execFileSync('tar', ['-czf', file, '-C', pkgDir, './VERSION']);
    const sig = Buffer.alloc(64, 7).toString('base64');
    const up = await api.req('POST', `/api/artifacts?version=9.0.0&signature=${encodeURIComponent(sig)}`, new Uint8Array(fs.readFileSync(file)), {
      'content-type': 'application/octet-stream',
    });
    expect(up.status).toBe(201);

    const c = await cli([
      'rollout',
      'create',
      '--artifact',
      up.body.id,
      '--selector',
      'labels.grp == "upd"',
      '--waves',
      '1,100%',
      '--max-failures',
      '0',
      '-o',
      'json',
    ]);
    expect(c.code, c.stderr).toBe(0);
    const id = (JSON.parse(c.stdout) as { id: string }).id;
    await waitFor(async () => (await api.get(`/api/rollouts/${id}`)).body.state === 'paused', 'paused after the first failure', 60_000);
    const st = await cli(['rollout', 'status', id]);
    expect(st.stdout).toMatch(new RegExp(`^rollout ${id} paused`, 'm'));
    expect(st.stdout).toMatch(/^AGENT\s+WAVE\s+STATE\s+FROM\s+REASON$/m);
    expect(st.stdout).toMatch(/\s1\s+failed\s/);
    expect((await cli(['rollout', 'pause', id])).stderr).toMatch(/HTTP 409/);
    const res = await cli(['rollout', 'resume', id]);
    expect(res.code).toBe(0);
    await waitFor(async () => (await api.get(`/api/rollouts/${id}`)).body.state === 'paused', 'paused again', 60_000);
    const can = await cli(['rollout', 'cancel', id]);
    expect(can.code).toBe(0);
    expect(can.stdout).toMatch(new RegExp(`^rollout ${id} cancelled`, 'm'));
    expect((await cli(['rollout', 'list'])).stdout).toMatch(new RegExp(`^${id}\\s+cancelled\\s+9\\.0\\.0\\s`, 'm'));
    expect((await cli(['rollout', 'status', 'nope'])).code).toBe(1);
    expect((await cli(['rollout', 'create'])).code).toBe(2);
  });

  it('completion scripts for bash and zsh', async () => {
    const b = await cli(['completion', 'bash']);
    expect(b.code).toBe(0);
    const complete = (words: string[]): string =>
      execFileSync(
        'bash',
        ['-c', `${b.stdout}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _muster; echo "\${COMPREPLY[*]}"`],
        { encoding: 'utf8' },
      ).trim();
    expect(complete(['muster', 'ex'])).toBe('exec');
    expect(complete(['muster', 'rollout', 'pa'])).toBe('pause');
    expect(complete(['muster', 'exec', '--sel'])).toBe('--selector');
    expect(complete(['muster', 'agents', '--output', 'j'])).toBe('json');
    const z = await cli(['completion', 'zsh']);
    expect(z.stdout.startsWith('#compdef muster\n')).toBe(true);
    expect(z.stdout).toMatch(/'term:interactive terminal/);
    expect((await cli(['completion', 'fish'])).code).toBe(2);
  });

  describe('muster term through a real TTY', () => {
    /** Runs the installed CLI in a pseudo-terminal, as an operator's terminal emulator would. */
    function tty(args: string[], cols = 100, rows = 30) {
      const p = pty.spawn(path.join(bin, 'muster'), args, { name: 'xterm-256color', cols, rows, env: env() as Record<string, string> });
      let text = '';
      p.onData((d) => {
        text += d;
      });
      const exited = new Promise<number>((r) => p.onExit(({ exitCode }) => r(exitCode)));
      const wait = (re: RegExp, since = 0, what = String(re)) => waitFor(() => re.exec(text.slice(since)), what, 30_000);
      return { p, text: () => text, exited, wait };
    }

    it('opens a shell in raw mode, follows the window size, acks output end to end, detaches and re-attaches; watch is read-only', async () => {
      const t = tty(['term', 'web-01']);
      await t.wait(/\[session ([0-9a-f-]{36}); Ctrl-\] detaches\]/);
      const sessionId = /\[session ([0-9a-f-]{36})/.exec(t.text())![1]!;
      let mark = t.text().length;
      t.p.write('echo $((6*7))\r');
      await t.wait(/^42\r?$/m, mark, 'remote shell output');
      // Raw mode: Ctrl-C reaches the remote shell (a running sleep is interrupted), the CLI stays.
      mark = t.text().length;
      t.p.write('sleep 31.7; echo after-sleep\r');
      // The agent runs on this machine: wait until the remote sleep runs (an odd duration names it).
      await waitFor(() => {
        try {
          return execFileSync('pgrep', ['-f', 'sleep 31.7'], { encoding: 'utf8' }).trim();
        } catch {
          return '';
        }
      }, 'remote sleep running');
      t.p.write('\x03');
      t.p.write('echo interrupted-$((1+1))\r');
      await t.wait(/interrupted-2/, mark);
      expect(t.text().slice(mark)).not.toMatch(/^after-sleep\r?$/m);
      // SIGWINCH: the remote PTY takes the local size.
      t.p.resize(120, 40);
      await waitFor(async () => (await api.get(`/api/terminals/${sessionId}`)).body.cols === 120, 'resized');
      mark = t.text().length;
      t.p.write('stty size\r');
      await t.wait(/^40 120\r?$/m, mark, 'stty size');
      // More than the 1 MiB flow-control window: only flows if the CLI acknowledges what it wrote.
      mark = t.text().length;
      t.p.write('seq 1 400000 | tail -c 2000000 | wc -c; seq 1 250000\r');
      await t.wait(/^250000\r?$/m, mark, 'end of a 1.7 MB output');

      // The watcher (admin, read-only) sees the operator's output; its keys reach no shell.
      const w = tty(['term', '--watch', sessionId]);
      await w.wait(/read-only; Ctrl-\] detaches/);
      mark = t.text().length;
      const wmark = w.text().length;
      t.p.write('echo seen-by-$((2*3))\r');
      await w.wait(/seen-by-6/, wmark);
      w.p.write('echo from-watcher\r');
      await w.wait(/read-only: keys are not sent/, wmark, 'watch input refused');
      w.p.write('\x1d');
      expect(await w.exited).toBe(0);
      expect(t.text().slice(mark)).not.toContain('from-watcher');

      // Ctrl-] detaches: the shell lives on, and --attach takes it back with its state.
      mark = t.text().length;
      t.p.write('export KEPT=yes\r\x1d');
      expect(await t.exited).toBe(0);
      expect(t.text()).toContain(`muster term --attach ${sessionId}`);
      await waitFor(async () => (await api.get(`/api/terminals/${sessionId}`)).body.attached === false, 'detached');
      expect((await api.get(`/api/terminals/${sessionId}`)).body.status).toBe('open');

      const a = tty(['term', '--attach', sessionId], 90, 20);
      await a.wait(/\[session /);
      mark = a.text().length;
      a.p.write('echo kept=$KEPT\r');
      await a.wait(/^kept=yes\r?$/m, mark);
      await waitFor(async () => (await api.get(`/api/terminals/${sessionId}`)).body.cols === 90, 'attached size applied');
      a.p.write('exit 7\r');
      expect(await a.exited).toBe(7);
      expect(a.text()).toMatch(/\[session ended: .*exit 7\]/);
    });

    it('unknown agents and sessions are clear errors', async () => {
      const t = tty(['term', 'nobody']);
      expect(await t.exited).toBe(2);
      expect(t.text()).toMatch(/unknown agent\(s\): nobody/);
      const a = tty(['term', '--attach', '00000000-0000-0000-0000-000000000000']);
      expect(await a.exited).toBe(1);
      expect(a.text()).toMatch(/no such live session \(not_found\)/);
    });
  });
});
