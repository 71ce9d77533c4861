import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive } from '../helpers/exec.js';
import { Api, agentId, cleanup, hermeticAgentEnv, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { TermClient } from '../helpers/terminal-client.js';

/**
 * A real login shell reads the dotfiles of its own HOME: here a HOME this test writes (never the
 * machine's), including a slow ~/.bashrc and a shell closed in the middle of reading it — the case
 * that, with a real user's dotfiles (pyenv's rehash lock), stalled every later login shell.
 */
describe('terminal: a real login shell with its own dotfiles', () => {
  let s: TestServer;
  let client: TermClient;
  let id: string;
  let home: string;
  const pidDir = () => path.join(home, 'pids');

  /** Writes ~/.bash_profile (sourcing ~/.bashrc, as Debian's does) and ~/.bashrc. */
  function writeDotfiles(bashrc: string): void {
    fs.writeFileSync(path.join(home, '.bash_profile'), '[ -f ~/.bashrc ] && . ~/.bashrc\n');
    fs.writeFileSync(path.join(home, '.bashrc'), bashrc);
  }

  beforeAll(async () => {
    s = await startServer();
    const admin = await Api.login(s.url);
    const op = await admin.userWithRole('operator');
    home = tmpDir('login-home');
    fs.mkdirSync(pidDir());
    const a = startAgent(s, { name: 'login-shell', env: hermeticAgentEnv(home) });
    id = await agentId(a);
    await admin.waitAgent(id, 'online');
    client = await TermClient.connect(s, op);
  });
  afterAll(cleanup);

  it('reads ~/.bash_profile and ~/.bashrc of its HOME and starts there', async () => {
    writeDotfiles('export MUSTER_RC_MARK="rc-loaded-$((40+2))"\n');
    const t = await client.open(id, 100, 30);
    const out = await t.run('echo "M=$MUSTER_RC_MARK P=$PWD H=$HOME"; shopt -q login_shell && echo LOGIN');
    expect(out).toContain('M=rc-loaded-42');
    expect(out).toContain(`P=${home} H=${home}`);
    expect(out).toContain('LOGIN');
    t.close();
    await t.closedP;
  });

  it('a slow ~/.bashrc delays the prompt, not the terminal: typed-ahead input runs once it is read', async () => {
    // The rc file records its shell's pid, then sleeps: the terminal must open at once and what is
    // typed meanwhile must run when the shell gets to it.
    writeDotfiles(`echo $$ > ~/pids/$$\nsleep 3\nexport MUSTER_RC_MARK=slow-rc-done\n`);
    const t = await client.open(id, 100, 30);
    expect(await t.run('echo "M=$MUSTER_RC_MARK"', 30_000)).toContain('M=slow-rc-done');
    t.close();
    await t.closedP;
  });

  it('closing a shell in the middle of its ~/.bashrc kills it and leaves later shells unharmed', async () => {
    writeDotfiles(`echo $$ > ~/pids/$$\nsleep 60\nexport MUSTER_RC_MARK=never\n`);
    for (const f of fs.readdirSync(pidDir())) fs.rmSync(path.join(pidDir(), f));
    const t = await client.open(id, 100, 30);
    // Wait until the shell is inside its rc file (it wrote its pid), then close it there.
    const pid = await waitFor(() => fs.readdirSync(pidDir()).map(Number)[0], 'the slow rc file to start', 20_000, 50);
    expect(alive(pid)).toBe(true);
    t.close();
    const closed = await t.closedP;
    expect(closed.reason).toBeTruthy();
    await waitFor(() => !alive(pid), `shell ${pid} (in its rc file) gone`, 10_000, 50);

    // The next login shell, with a quick rc file again, opens and answers.
    writeDotfiles('export MUSTER_RC_MARK=fast-again\n');
    const t2 = await client.open(id, 100, 30);
    expect(await t2.run('echo "M=$MUSTER_RC_MARK"')).toContain('M=fast-again');
    t2.close();
    await t2.closedP;
  });
});
