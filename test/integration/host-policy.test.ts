import { execFileSync, spawn } from 'node:child_process';
import { createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { scriptSigningMessage } from '../../protocol/index.js';
import { Api, ROOT, agentId, cleanup, databases, startAgent, startServer, tmpDir, waitFor, type TestAgent, type TestServer } from '../helpers/harness.js';
import { createTask, outputText, waitTask } from '../helpers/exec.js';
import { TermClient } from '../helpers/terminal-client.js';

const CLI_JS = path.join(ROOT, 'dist', 'cli.js');
const dbs = await databases();

/** Writes a policy file in its own private directory and returns its path. */
function writePolicy(policy: unknown, mode = 0o600): string {
  const file = path.join(tmpDir('policy'), 'policy.json');
  fs.writeFileSync(file, typeof policy === 'string' ? policy : JSON.stringify(policy));
  fs.chmodSync(file, mode);
  return file;
}

/** An ed25519 key pair: private key PEM file (for `muster sign`) and the raw public key in base64 (for the policy). */
function keyPair(): {
  keyFile: string;
  pub: string;
  sign(run: { script: string; interpreter: string; args?: string[]; env?: Record<string, string>; cwd?: string | null }): string;
} {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const keyFile = path.join(tmpDir('key'), 'script.key');
  fs.writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const pub = publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
  return {
    keyFile,
    pub,
    sign: (r) =>
      sign(
        null,
        Buffer.from(
          scriptSigningMessage({
            interpreter: r.interpreter,
            args: r.args ?? [],
            env: r.env ?? {},
            cwd: r.cwd ?? null,
            scriptSha256: createHash('sha256').update(r.script).digest('hex'),
          }),
        ),
        privateKey,
      ).toString('base64'),
  };
}

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MUSTER_')));
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

describe('host-side policy the server cannot override', () => {
  let s: TestServer;
  let admin: Api;
  let op: Api;

  async function agentWith(policyFile: string, name: string): Promise<{ a: TestAgent; id: string }> {
    const a = startAgent(s, { name, args: ['--policy', policyFile] });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online', 30_000);
    return { a, id };
  }

  beforeAll(async () => {
    s = await startServer();
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
  });
  afterAll(cleanup);

  it('an agent without a policy file reports the default policy (everything allowed) and runs as before', async () => {
    const { id } = await agentWith(path.join(tmpDir('nopolicy'), 'absent.json'), 'pol-default');
    const r = await admin.get(`/api/agents/${id}`);
    expect(r.body.policy).toMatchObject({ source: 'default', terminals: true, exec: true, interpreters: null, runAs: null, requireSignedScripts: false });
    const t = await waitTask(op, (await createTask(op, { script: 'echo ok', targets: { agentIds: [id] } })).id);
    expect(t.status).toBe('succeeded');
  });

  it('terminals off: the server refuses term.open with policy_denied before asking the agent; the policy is in GET /api/agents/:id', async () => {
    const { id } = await agentWith(writePolicy({ terminals: false }), 'pol-noterm');
    const r = await admin.get(`/api/agents/${id}`);
    expect(r.status).toBe(200);
    expect(r.body.policy).toMatchObject({ source: 'file', terminals: false, exec: true });
    const client = await TermClient.connect(s, op);
    const err = await client.open(id).then(
      () => null,
      (e: Error & { code?: string }) => e,
    );
    expect(err?.code).toBe('policy_denied');
    expect(err?.message).toMatch(/terminals are disabled by host policy/);
  });

  it('exec off: the execution ends policy_denied with the reason, counted in the task counts; nothing runs', async () => {
    const { id } = await agentWith(writePolicy({ exec: false }), 'pol-noexec');
    const marker = path.join(tmpDir('marker'), 'ran');
    const created = await createTask(op, { script: `touch ${marker}`, targets: { agentIds: [id] } });
    expect(created.executions[0].status).toBe('policy_denied');
    const t = await waitTask(op, created.id);
    expect(t.status).toBe('failed');
    expect(t.counts).toEqual({ policy_denied: 1 });
    expect(t.executions[0].reason).toMatch(/script execution is disabled by host policy/);
    expect(fs.existsSync(marker)).toBe(false);
    // Listing by state works like any other state.
    const list = await op.get(`/api/executions?agentId=${id}&status=policy_denied`);
    expect(list.body.total).toBe(1);
  });

  it('an execution refused up front counts against maxFailures before anything is dispatched', async () => {
    const { id: denied } = await agentWith(writePolicy({ exec: false }), 'pol-noexec-mf');
    const { id: ok } = await agentWith(path.join(tmpDir('nopolicy'), 'absent.json'), 'pol-ok-mf');
    const marker = path.join(tmpDir('marker'), 'ran');
    const created = await createTask(op, { script: `touch ${marker}`, targets: { agentIds: [ok, denied] }, maxFailures: 0 });
    const t = await waitTask(op, created.id);
    const byAgent = Object.fromEntries(t.executions.map((e: any) => [e.agentId, e]));
    expect(byAgent[denied]).toMatchObject({ status: 'policy_denied' });
    expect(byAgent[ok], JSON.stringify(t)).toMatchObject({
      status: 'cancelled',
      startedAt: null,
      reason: expect.stringMatching(/stopped: more than 0 failure/),
    });
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('an interpreter the host does not allow is refused; an allowed one runs', async () => {
    const { id } = await agentWith(writePolicy({ interpreters: ['sh'] }), 'pol-interp');
    const denied = await waitTask(op, (await createTask(op, { script: 'echo hi', interpreter: 'python3', targets: { agentIds: [id] } })).id);
    expect(denied.executions[0]).toMatchObject({ status: 'policy_denied' });
    expect(denied.executions[0].reason).toMatch(/interpreter "python3" is not allowed by host policy \(allowed: sh\)/);
    const ok = await waitTask(op, (await createTask(op, { script: 'echo hi', interpreter: 'sh', targets: { agentIds: [id] } })).id);
    expect(ok.status).toBe('succeeded');
  });

  it('requireSignedScripts: a script signed by `muster sign --script` runs; unsigned and tampered ones are refused', async () => {
    const k = keyPair();
    const { id } = await agentWith(writePolicy({ requireSignedScripts: true, scriptPublicKeys: [k.pub] }), 'pol-signed');
    const scriptFile = path.join(tmpDir('script'), 'job.sh');
    fs.writeFileSync(scriptFile, 'echo signed-$((6*7))\n');
    const signed = await cli(['sign', '--key', k.keyFile, '--script', '--interpreter', 'bash', '--arg', 'x', scriptFile]);
    expect(signed.code, signed.stderr).toBe(0);
    const signature = signed.stdout.trim();
    const script = fs.readFileSync(scriptFile, 'utf8');

    const good = await waitTask(op, (await createTask(op, { script, args: ['x'], signature, targets: { agentIds: [id] } })).id);
    expect(good.status).toBe('succeeded');

    const unsigned = await waitTask(op, (await createTask(op, { script, args: ['x'], targets: { agentIds: [id] } })).id);
    expect(unsigned.executions[0].status).toBe('policy_denied');
    expect(unsigned.executions[0].reason).toMatch(/requires signed scripts/);

    for (const tampered of [
      { script: `${script}rm -rf /tmp/nothing\n`, args: ['x'] },
      { script, args: ['y'] },
      { script, args: ['x'], interpreter: 'sh' },
      { script, args: ['x'], env: { BASH_ENV: '/tmp/evil' } },
    ]) {
      const t = await waitTask(op, (await createTask(op, { ...tampered, signature, targets: { agentIds: [id] } })).id);
      expect(t.executions[0].status, JSON.stringify(tampered)).toBe('policy_denied');
      expect(t.executions[0].reason).toMatch(/signature does not verify/);
    }
    // A malformed signature is a 400, not a 500.
    const bad = await op.post('/api/tasks', { script, signature: 'not base64!', targets: { agentIds: [id] } });
    expect(bad.status).toBe(400);
  });

  it('a world-writable policy file is ignored with a loud error and the host refuses everything until it is fixed (SIGHUP)', async () => {
    const file = writePolicy({ terminals: true, exec: true }, 0o666);
    const { a, id } = await agentWith(file, 'pol-insecure');
    expect(a.output()).toMatch(/"level":"error".*world-writable.*HOST POLICY FILE IGNORED/);
    const r = await admin.get(`/api/agents/${id}`);
    expect(r.body.policy).toMatchObject({ source: 'lockdown', terminals: false, exec: false });
    expect(r.body.policy.error).toMatch(/group- or world-writable/);
    const t = await waitTask(op, (await createTask(op, { script: 'echo hi', targets: { agentIds: [id] } })).id);
    expect(t.executions[0].status).toBe('policy_denied');
    expect(t.executions[0].reason).toMatch(/locked down/);

    // Fixed on the host and re-read: the server learns the new policy without a reconnect.
    fs.chmodSync(file, 0o600);
    a.proc.kill('SIGHUP');
    await waitFor(async () => (await admin.get(`/api/agents/${id}`)).body.policy?.source === 'file', 'policy after SIGHUP', 20_000);
    // Both reports are audited as the agent's own action (the lockdown one as not ok).
    const audit = await waitFor(
      async () => {
        const r = await admin.get(`/api/audit?action=agent.policy&targetId=${id}`);
        return r.body.items?.length >= 2 ? r.body.items : null;
      },
      'agent.policy audit rows',
      20_000,
    );
    expect(audit.map((x: any) => x.ok)).toEqual(expect.arrayContaining([true, false]));
    expect(audit[0].actor).toBe(`agent:${id}`);
    const ok = await waitTask(op, (await createTask(op, { script: 'echo hi', targets: { agentIds: [id] } })).id);
    expect(ok.status).toBe('succeeded');
  });

  it('an invalid policy file (unknown key) is ignored the same way', async () => {
    const { a, id } = await agentWith(writePolicy({ termnials: false }), 'pol-typo');
    expect(a.output()).toMatch(/HOST POLICY FILE IGNORED/);
    expect((await admin.get(`/api/agents/${id}`)).body.policy).toMatchObject({ source: 'lockdown' });
  });

  describe('runAs', () => {
    const user = `mpol${Math.random().toString(36).slice(2, 8)}`;
    let created = false;
    beforeAll(() => {
      if (process.getuid?.() !== 0) return;
      execFileSync('useradd', ['-M', '-s', '/bin/bash', user]);
      created = true;
    });
    afterAll(async () => {
      if (!created) return;
      // The terminal's shell may still be exiting: userdel refuses a user with live processes.
      await waitFor(
        () => {
          try {
            execFileSync('userdel', [user], { stdio: 'ignore' });
            return true;
          } catch {
            return false;
          }
        },
        `userdel ${user}`,
        20_000,
        200,
      );
    });

    it('scripts and terminals run as the policy user', async (ctx) => {
      if (!created) {
        console.warn('SKIPPED runAs test: needs root to create a user and switch to it');
        ctx.skip();
      }
      const { id } = await agentWith(writePolicy({ runAs: user }), 'pol-runas');
      expect((await admin.get(`/api/agents/${id}`)).body.policy.runAs).toBe(user);
      const t = await waitTask(op, (await createTask(op, { script: 'id -un; echo "H=$HOME"', targets: { agentIds: [id] } })).id);
      expect(t.status).toBe('succeeded');
      const out = await (await fetch(`${op.base}/api/executions/${t.executions[0].id}/output`, { headers: { cookie: op.cookie! } })).text();
      expect(out.split('\n')[0]).toBe(user);
      const client = await TermClient.connect(s, op);
      const term = await client.open(id);
      expect(await term.run('id -un')).toMatch(new RegExp(`^${user}\\r?$`, 'm'));
      term.close();
      await term.closedP;
    });

    it('nothing the server sends in the environment reaches the steps that run as root before the switch', async (ctx) => {
      if (!created) {
        console.warn('SKIPPED runAs environment test: needs root to create a user and switch to it');
        ctx.skip();
      }
      // A directory the user could have written: fake `setpriv` and `systemd-run` that would run as
      // root if a root step looked them up on the task's PATH, and a library for LD_PRELOAD.
      const evil = tmpDir('evil');
      const marker = path.join(evil, 'ran-as-root');
      for (const cmd of ['setpriv', 'systemd-run', 'sh']) {
        fs.writeFileSync(path.join(evil, cmd), `#!/bin/sh\nid -u >> ${marker}\nexit 1\n`, { mode: 0o755 });
      }
      fs.chmodSync(evil, 0o755);
      const { id } = await agentWith(writePolicy({ runAs: user }), 'pol-runas-env');
      const env = { PATH: `${evil}:/usr/bin:/bin`, LD_PRELOAD: path.join(evil, 'nope.so'), QUOTED: `it's "$(id)" \`x\` ; \\n` };
      const t = await waitTask(
        op,
        (
          await createTask(op, {
            script: 'id -un; printf "%s\\n" "$QUOTED"; printf "%s\\n" "$PATH"; env | grep -c "^VITEST=" || true',
            env,
            targets: { agentIds: [id] },
          })
        ).id,
      );
      const out = await outputText(op, t.executions[0].id, 'stdout');
      expect(fs.existsSync(marker), `a root step ran ${marker}'s fakes`).toBe(false);
      expect(t.status, out).toBe('succeeded');
      // The script itself, as the user, has exactly what was sent.
      expect(out.split('\n').slice(0, 4)).toEqual([user, env.QUOTED, env.PATH, '0']);
    });
  });

  it('a policy tightened on the host (SIGHUP) ends the terminals and scripts it now forbids', async () => {
    const file = writePolicy({ terminals: true, exec: true });
    const { a, id } = await agentWith(file, 'pol-tighten');
    const client = await TermClient.connect(s, op);
    const term = await client.open(id);
    await term.run('true');
    const task = await createTask(op, { script: 'echo started; sleep 60', targets: { agentIds: [id] } });
    await waitFor(async () => (await op.get(`/api/tasks/${task.id}`)).body.executions[0].status === 'running', 'script running', 30_000);

    fs.writeFileSync(file, JSON.stringify({ terminals: false, exec: false }));
    a.proc.kill('SIGHUP');
    const closed = await waitFor(() => term.closed, 'the terminal closed by the tightened policy', 30_000);
    expect(closed.reason).toMatch(/host policy/);
    const d = await waitTask(op, task.id, 30_000);
    expect(d.executions[0].status).toBe('cancelled');
    expect(d.executions[0].reason).toMatch(/host policy changed: script execution is disabled/);
  });

  describe('the agent enforces it whatever the server sends', () => {
    let wss: WebSocketServer;
    let sock: WebSocket;
    let hello: any;
    let agent: TestAgent;
    const got: any[] = [];
    const k = keyPair();

    /** Waits for the agent's answer matching `pred`. */
    const answer = (pred: (m: any) => boolean, what: string) => waitFor(() => got.find(pred), what, 30_000);

    beforeAll(async () => {
      // A server that sends whatever it is told to: what a compromised server could do.
      wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
      await new Promise((r) => wss.once('listening', r));
      const port = (wss.address() as { port: number }).port;
      const connected = new Promise<void>((resolve) =>
        wss.on('connection', (ws) => {
          ws.on('message', (d, binary) => {
            if (binary) return;
            const m = JSON.parse(d.toString());
            if (m.type === 'hello') {
              hello = m;
              sock = ws;
              ws.send(
                JSON.stringify({ type: 'welcome', protocol: 1, agentId: m.agentId, heartbeatIntervalMs: 5000, serverTime: Date.now(), secret: 'fake-secret' }),
              );
              resolve();
            } else got.push(m);
          });
        }),
      );
      const policy = writePolicy({ terminals: false, interpreters: ['bash'], requireSignedScripts: true, scriptPublicKeys: [k.pub] });
      agent = startAgent({ wsUrl: `ws://127.0.0.1:${port}`, enrollToken: 'x' }, { name: 'pol-raw', args: ['--policy', policy] });
      await connected;
    });
    afterAll(async () => {
      await agent.stop();
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    });

    const run = (o: { script: string; interpreter?: string; args?: string[]; signature?: string }) => {
      const executionId = randomUUID();
      sock.send(
        JSON.stringify({
          type: 'exec.run',
          executionId,
          taskId: randomUUID(),
          script: o.script,
          interpreter: o.interpreter ?? 'bash',
          args: o.args ?? [],
          env: {},
          cwd: null,
          timeoutSec: 60,
          ...(o.signature ? { signature: o.signature } : {}),
        }),
      );
      return executionId;
    };

    it('reports its policy in hello', () => {
      expect(hello.policy).toMatchObject({ source: 'file', terminals: false, interpreters: ['bash'], requireSignedScripts: true, scriptPublicKeys: [k.pub] });
    });

    it('refuses term.open with policy_denied', async () => {
      const sessionId = randomUUID();
      sock.send(JSON.stringify({ type: 'term.open', sessionId, cols: 80, rows: 24 }));
      const m = await answer((x) => x.type === 'term.exit' && x.sessionId === sessionId, 'term.exit');
      expect(m).toMatchObject({ code: 'policy_denied' });
      expect(m.reason).toMatch(/terminals are disabled/);
      expect(got.some((x) => x.type === 'term.opened')).toBe(false);
    });

    it('refuses unsigned, tampered, and disallowed-interpreter scripts; runs the signed one', async () => {
      const marker = path.join(tmpDir('raw'), 'ran');
      const script = `touch ${marker}\n`;
      const signature = k.sign({ script, interpreter: 'bash' });
      const cases = [
        { o: { script }, why: /requires signed scripts/ },
        { o: { script: `${script}echo extra\n`, signature }, why: /signature does not verify/ },
        { o: { script, signature, args: ['x'] }, why: /signature does not verify/ },
        { o: { script, interpreter: 'sh', signature: k.sign({ script, interpreter: 'sh' }) }, why: /interpreter "sh" is not allowed/ },
      ];
      for (const c of cases) {
        const executionId = run(c.o);
        const m = await answer((x) => x.executionId === executionId && x.type !== 'exec.started', `answer for ${executionId}`);
        expect(m).toMatchObject({ type: 'exec.rejected', code: 'policy_denied' });
        expect(m.reason).toMatch(c.why);
      }
      expect(fs.existsSync(marker)).toBe(false);
      const executionId = run({ script, signature });
      const fin = await answer((x) => x.executionId === executionId && x.type === 'exec.finished', 'signed run to finish');
      expect(fin.status).toBe('succeeded');
      expect(fs.existsSync(marker)).toBe(true);
    });
  });
});

describe.each(dbs)('host policy storage (%s)', (db) => {
  afterAll(cleanup);

  it("the reported policy and a task's signature are stored: both survive a server restart", async () => {
    let s = await startServer({ db });
    let admin = await Api.login(s.url);
    const k = keyPair();
    const policy = writePolicy({ terminals: false, requireSignedScripts: true, scriptPublicKeys: [k.pub], allowedPaths: ['/srv/app'] });
    const stateDir = tmpDir('agent');
    let a = startAgent(s, { name: 'pol-store', stateDir, args: ['--policy', policy] });
    const id = await agentId(a);
    await admin.waitAgent(id, 'online', 30_000);
    const script = 'echo stored';
    const task = await waitTask(
      admin,
      (await createTask(admin, { script, signature: k.sign({ script, interpreter: 'bash' }), targets: { agentIds: [id] } })).id,
    );
    expect(task.status).toBe('succeeded');

    await a.stop();
    await s.stop();
    s = await s.restart();
    admin = await Api.login(s.url);
    const off = await admin.get(`/api/agents/${id}`);
    expect(off.body.status).toBe('offline');
    expect(off.body.policy).toMatchObject({
      source: 'file',
      terminals: false,
      requireSignedScripts: true,
      scriptPublicKeys: [k.pub],
      allowedPaths: ['/srv/app'],
    });

    a = startAgent(s, { name: 'pol-store', stateDir, args: ['--policy', policy] });
    await admin.waitAgent(id, 'online', 30_000);
    // The rerun is built from the stored task: its signature came back from the database.
    const rerun = await admin.post(`/api/tasks/${task.id}/rerun`, { all: true });
    expect(rerun.status).toBe(201);
    expect((await waitTask(admin, rerun.body.id)).status).toBe('succeeded');
  });
});
