/** `muster schedules` driven as a subprocess (dist/cli.js) against a real server: the README's examples verbatim, then checks through the API. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Api, ROOT, cleanup, startServer } from '../helpers/harness.js';

const CLI_JS = path.join(ROOT, 'dist', 'cli.js');

function examples(): string[] {
  const m = /<!-- cli-schedules-examples -->\s*```sh\n([\s\S]*?)```/.exec(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  if (!m) throw new Error('README has no cli-schedules-examples block');
  return m[1]!
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter(Boolean);
}

function run(line: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Through a shell, as an operator types it (quotes included); `muster` is the bundled CLI.
    const p = spawn('bash', ['-c', line.replace(/^muster /, `"${process.execPath}" "${CLI_JS}" `)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('muster schedules', () => {
  afterAll(cleanup);

  it('create, list, show (next fires, history), disable, enable, delete', async () => {
    const s = await startServer();
    const api = await Api.login(s.url);
    const tok = await api.post('/api/tokens', { name: 'cli-schedules' });
    expect(tok.status).toBe(201);
    expect(
      (
        await api.post('/api/scripts', {
          name: 'hello',
          interpreter: 'sh',
          body: 'echo "hello $MUSTER_PARAM_WHO"\n',
          params: [{ name: 'WHO', type: 'string', default: 'x' }],
        })
      ).status,
    ).toBe(201);
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MUSTER_'))),
      MUSTER_SERVER: s.url,
      MUSTER_TOKEN: tok.body.token,
    };
    const lines = examples();
    expect(lines.map((l) => l.split(' ')[2])).toEqual(['create', 'list', 'show', 'disable', 'enable', 'delete']);
    const out: string[] = [];
    for (const [i, line] of lines.entries()) {
      const r = await run(line, env);
      expect(r.stderr, line).toBe('');
      expect(r.code, line).toBe(0);
      out.push(r.stdout);
      if (i === 0) {
        const sch = (await api.get('/api/schedules/nightly-hello')).body;
        expect(sch).toMatchObject({
          cron: '30 2 * * 1-5',
          timeZone: 'Europe/Berlin',
          params: { WHO: 'ops' },
          overlap: 'skip',
          enabled: true,
          targets: { selector: 'all' },
        });
        expect(r.stdout).toContain(`next fire ${sch.nextFireAt}`);
      }
      if (i === 2) {
        const sch = (await api.get('/api/schedules/nightly-hello')).body;
        expect(sch.nextFires).toHaveLength(5);
        for (const t of sch.nextFires) expect(r.stdout).toContain(t);
        expect(r.stdout).toMatch(/history: 0 fires, success rate -/);
        expect(r.stdout).toContain('hello@latest on all, cron "30 2 * * 1-5" Europe/Berlin');
      }
      if (i === 3) expect((await api.get('/api/schedules/nightly-hello')).body.enabled).toBe(false);
      if (i === 4) expect((await api.get('/api/schedules/nightly-hello')).body.enabled).toBe(true);
    }
    expect(out[1]).toMatch(/nightly-hello\s+yes\s+cron "30 2 \* \* 1-5" Europe\/Berlin\s+hello@latest\s+all/);
    expect((await api.get('/api/schedules/nightly-hello')).status).toBe(404);

    // An interval schedule, JSON output, and errors with their exit status.
    const j = await run('muster schedules create every-min --script hello --every 60 --selector all --disabled -o json', env);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ name: 'every-min', intervalSec: 60, enabled: false, nextFires: [] });
    expect((await run('muster schedules show nope', env)).code).toBe(1);
    const usage = await run('muster schedules create x --script hello --selector all', env);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/either --cron EXPR or --every SEC/);
    expect((await run('muster schedules create y --script hello --every 1 --selector all', env)).stderr).toMatch(/intervalSec must be at least/);
    await s.stop();
  }, 120_000);
});
