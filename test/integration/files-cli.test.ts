import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, ROOT, agentId, cleanup, startAgent, startServer, tmpDir, type TestServer } from '../helpers/harness.js';

const CLI_JS = path.join(ROOT, 'dist', 'cli.js');

/** `muster files` driven as a subprocess against a real server and a real agent. */
describe('muster files (CLI)', () => {
  let s: TestServer;
  let root = '';
  let env: NodeJS.ProcessEnv;

  function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const p = spawn(process.execPath, [CLI_JS, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    return new Promise((resolve) => p.once('close', (code) => resolve({ code, stdout, stderr })));
  }

  beforeAll(async () => {
    s = await startServer();
    const admin = await Api.login(s.url);
    root = tmpDir('cli-root');
    const a = startAgent(s, { name: 'cli-files', env: { MUSTER_AGENT_FILE_ROOT: root } });
    await admin.waitAgent(await agentId(a), 'online', 30_000);
    const tok = await admin.post('/api/tokens', { name: 'cli-files' });
    expect(tok.status).toBe(201);
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MUSTER_')));
    env = { ...base, MUSTER_SERVER: s.url, MUSTER_TOKEN: tok.body.token, MUSTER_CLI_CONFIG: path.join(tmpDir('cli-cfg'), 'config.json') };
  }, 90_000);
  afterAll(cleanup);

  it('uploads, distributes, shows status, rolls back, and lists', async () => {
    const dir = tmpDir('cli-src');
    const one = path.join(dir, 'one.conf');
    const two = path.join(dir, 'two.conf');
    fs.writeFileSync(one, 'first\n');
    fs.writeFileSync(two, Buffer.alloc(200_000, 'z'));
    const dest = '/etc/cli-test/app.conf';
    const onDisk = path.join(root, dest);

    const up1 = await cli(['files', 'upload', one, '--path', dest, '--mode', '0600']);
    expect(up1.code, up1.stderr).toBe(0);
    expect(up1.stdout).toMatch(/revision 1, 6 bytes, sha256 [0-9a-f]{64}/);
    // Managed already: metadata flags are refused (they would be silently ignored otherwise).
    const again = await cli(['files', 'upload', two, '--path', dest, '--mode', '0644']);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already managed/);

    const d1 = await cli(['files', 'distribute', dest, '--selector', 'all', '--wait']);
    expect(d1.code, d1.stdout + d1.stderr).toBe(0);
    expect(d1.stdout).toMatch(/distribution \S+ succeeded: apply revision 1, 1 host\(s\): 1 applied/);
    expect(fs.readFileSync(onDisk, 'utf8')).toBe('first\n');
    expect(fs.statSync(onDisk).mode & 0o777).toBe(0o600);

    const up2 = await cli(['files', 'upload', two, '--path', dest]);
    expect(up2.stdout).toMatch(/revision 2, 200000 bytes/);
    const d2 = await cli(['files', 'distribute', dest, '--selector', 'all', '--revision', '2', '--waves', '1,100%', '--wait', '-o', 'json']);
    expect(d2.code, d2.stderr).toBe(0);
    expect(JSON.parse(d2.stdout)).toMatchObject({ state: 'succeeded', revision: 2, counts: { applied: 1 } });
    expect(fs.statSync(onDisk).size).toBe(200_000);

    const st = await cli(['files', 'status', dest]);
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).toMatch(/latest revision 2, 1 host\(s\), 0 drifted/);
    expect(st.stdout).toMatch(/cli-files\s+2\s+ok/);

    const rb = await cli(['files', 'rollback', dest, '--wait']);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    expect(rb.stdout).toMatch(/apply revision 1, 1 host\(s\): 1 applied/);
    expect(fs.readFileSync(onDisk, 'utf8')).toBe('first\n');

    const list = await cli(['files', 'list', '-o', 'json']);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ path: dest, latestRevision: 2, hostCount: 1, driftedCount: 0 })]);

    const bad = await cli(['files', 'distribute', dest, '--selector', 'labels.x ==']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/selector_syntax/);
  });
});
