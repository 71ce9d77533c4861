import os from 'node:os';
import { Client, configPath, normaliseServer, saveConfig } from '../client.js';
import { CliError, str, type Command } from '../command.js';

/** Reads a password from the terminal without echoing it. */
function promptPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          done();
          resolve(buf);
          return;
        }
        if (ch === '\u0003') {
          done();
          reject(new CliError('cancelled'));
          return;
        }
        if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
        else buf += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/** `muster login`: password login, then a fresh API token stored in the CLI config (0600). */
export const login: Command = {
  name: 'login',
  summary: 'log in and store an API token for the other commands',
  usage: 'muster login --server URL --user NAME [--password PW]   (or MUSTER_PASSWORD, or a prompt)',
  options: { server: { type: 'string' }, user: { type: 'string' }, password: { type: 'string' } },
  run: async ({ values, out, env }) => {
    const rawServer = str(values, 'server') ?? env['MUSTER_SERVER'];
    const user = str(values, 'user');
    if (!rawServer) throw new CliError('--server URL is required');
    if (!user) throw new CliError('--user NAME is required');
    const server = normaliseServer(rawServer);
    let password = str(values, 'password') ?? env['MUSTER_PASSWORD'];
    if (password === undefined) {
      if (!process.stdin.isTTY) throw new CliError('no password: pass --password, set MUSTER_PASSWORD, or run on a terminal');
      password = await promptPassword(`password for ${user}@${server}: `);
    }
    const c = new Client(server);
    const res = await c.request('POST', '/api/auth/login', { username: user, password });
    const me = (await res.json()) as { user?: { role?: string } };
    const set = res.headers.get('set-cookie');
    if (!set) throw new Error('the server answered the login without a session cookie');
    c.cookie = set.split(';')[0]!;
    const name = `cli ${os.userInfo().username}@${os.hostname()} ${new Date().toISOString().slice(0, 19)}Z`;
    const tok = await c.post<{ id: number; token: string; prefix: string }>('/api/tokens', { name });
    // The session was only needed to mint the token; end it so it does not linger.
    await c.request('POST', '/api/auth/logout').catch(() => undefined);
    const file = configPath(env);
    saveConfig(file, { server, token: tok.token });
    out(`logged in to ${server} as ${user} (${me.user?.role ?? 'unknown role'}); token ${tok.prefix}… saved to ${file}\n`);
  },
};
