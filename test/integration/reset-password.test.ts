/**
 * The documented way back in when the admin password is lost: `node dist/server.js reset-password
 * <user>` against the server's database (SQLite or MariaDB via MUSTER_DB_URL), with the server
 * running. It ends the user's sessions and is audited.
 *
 * The command runs as an async child: a synchronous spawn would block this process's event loop
 * for seconds on a loaded machine, so the HTTP client would not see the server close its idle
 * keep-alive connection and the next request would go out on a dead socket.
 */
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { CloseCode } from '../../protocol/errors.js';
import { ADMIN_PASSWORD, Api, SERVER_JS, cleanup, consoleSocket, databases, startServer, tmpDir } from '../helpers/harness.js';

const dbs = await databases();

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
/** Runs `node dist/server.js reset-password ...args` with `input` on stdin, without blocking. */
function resetPassword(env: NodeJS.ProcessEnv, args: string[], input = ''): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SERVER_JS, 'reset-password', ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

describe.each(dbs)('reset-password (%s)', (db) => {
  afterAll(cleanup);

  it('generated or from stdin: old password and sessions stop working, the new one signs in, audited', async () => {
    const s = await startServer({ db });
    const run = (args: string[], input?: string) => resetPassword({ MUSTER_DB_URL: s.dbUrl, MUSTER_DATA_DIR: s.dataDir }, args, input);
    const old = await Api.login(s.url);
    expect((await old.get('/api/auth/me')).status).toBe(200);

    const r = await run(['admin']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/Password of "admin" \(admin\) reset in .*; 1 session\(s\) ended/);
    const pw = /New password: (\S+)/.exec(r.stdout)![1]!;
    expect(pw.length).toBeGreaterThanOrEqual(12);

    expect((await old.get('/api/auth/me')).status).toBe(401);
    await expect(Api.login(s.url, 'admin', ADMIN_PASSWORD)).rejects.toThrow(/401/);
    const fresh = await Api.login(s.url, 'admin', pw);

    // From stdin (case-insensitive name), nothing printed back.
    const chosen = 'a-new-admin-password-42';
    const r2 = await run(['ADMIN', '--password-stdin'], `${chosen}\n`);
    expect(r2.status).toBe(0);
    expect(r2.stdout).not.toContain(chosen);
    expect((await fresh.get('/api/auth/me')).status).toBe(401);
    const again = await Api.login(s.url, 'admin', chosen);

    const audit = await again.get('/api/audit?action=user.password_reset');
    expect(audit.status).toBe(200);
    const rows = (audit.body.items ?? audit.body) as { action: string; actor: string; details: Record<string, unknown> }[];
    const resets = rows.filter((x) => x.action === 'user.password_reset');
    expect(resets).toHaveLength(2);
    expect(resets.map((x) => x.details['generated']).sort()).toEqual([false, true]);
    expect(resets[0]!.actor).toMatch(/^system \(reset-password by /);
    expect(JSON.stringify(resets)).not.toContain(chosen);
  });

  it("the running server ends the user's open console sockets within MUSTER_SOCKET_RECHECK_SEC (the command has no bus)", async () => {
    const s = await startServer({ db, env: { MUSTER_SOCKET_RECHECK_SEC: '1' } });
    const admin = await Api.login(s.url);
    const other = await admin.userWithRole('operator');
    const sock = await consoleSocket(s, admin);
    await sock.next((m) => m.type === 'ready');
    const bystander = await consoleSocket(s, other);
    await bystander.next((m) => m.type === 'ready');
    const closed = new Promise<number>((r) => sock.ws.once('close', (code) => r(code)));
    const r = await resetPassword({ MUSTER_DB_URL: s.dbUrl, MUSTER_DATA_DIR: s.dataDir }, ['admin']);
    expect(r.status, r.stderr).toBe(0);
    // Silent socket: nothing it sends triggers the check; the periodic re-read must.
    expect(await Promise.race([closed, new Promise((r) => setTimeout(() => r('still open'), 30_000))])).toBe(CloseCode.sessionEnded);
    // Another user's socket is untouched.
    expect(bystander.ws.readyState).toBe(bystander.ws.OPEN);
    bystander.close();
  });

  it('bad input: unknown user, short password, no user given: exit 2 with a message, nothing changed', async () => {
    const s = await startServer({ db });
    const run = (args: string[], input = '') => resetPassword({ MUSTER_DB_URL: s.dbUrl, MUSTER_DATA_DIR: s.dataDir }, args, input);
    const nobody = await run(['nobody']);
    expect(nobody.status).toBe(2);
    expect(nobody.stderr).toMatch(/no user "nobody" in .*\(users: admin\)/);
    const short = await run(['admin', '--password-stdin'], 'short\n');
    expect(short.status).toBe(2);
    expect(short.stderr).toMatch(/must be 8 to 1024 characters/);
    const none = await run([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/usage: node dist\/server.js reset-password <user>/);
    await Api.login(s.url); // the admin password is unchanged
    // A data dir with no Muster database in it: says which database it looked at.
    const empty = await resetPassword({ MUSTER_DB_URL: '', MUSTER_DATA_DIR: tmpDir('nodb') }, ['admin']);
    expect(empty.status).toBe(2);
    expect(empty.stderr).toMatch(/cannot read users from sqlite:/);
  });
});
