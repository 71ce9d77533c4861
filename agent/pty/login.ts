import fs from 'node:fs';

/** One /etc/passwd entry. */
export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** What node-pty must spawn for a login shell of a user. */
export interface LoginSpec {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  user: string;
  shell: string;
}

/** Raised when a terminal cannot be started for a user/shell (unknown user, not root, ...). */
export class LoginError extends Error {}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Parses /etc/passwd (or `text`) into entries; malformed lines are skipped. */
export function readPasswd(text = safeRead('/etc/passwd')): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const f = line.split(':');
    if (f.length < 7) continue;
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0]!, uid, gid, home: f[5]!, shell: f[6]! });
  }
  return out;
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** A UTF-8 locale: the agent's own if it is UTF-8, else C.UTF-8 (present on every modern glibc/musl). */
export function utf8Locale(agentEnv: NodeJS.ProcessEnv): string {
  const lang = agentEnv['LC_ALL'] || agentEnv['LANG'];
  return lang && /utf-?8/i.test(lang) ? lang : 'C.UTF-8';
}

/**
 * Builds the login shell of `userName` (default: the agent's user) with a clean environment:
 * the agent's own environment (enrollment token, secrets) never leaks into a terminal.
 */
export function loginSpec(o: {
  user?: string | undefined;
  shell?: string | undefined;
  home?: string | undefined;
  agentEnv: NodeJS.ProcessEnv;
  passwd?: PasswdEntry[];
}): LoginSpec {
  const { target, switching } = resolveUser(o.user, 'open a terminal', o.passwd);

  let shell = o.shell || target.shell || '/bin/sh';
  if (/\/(nologin|false)$/.test(shell)) shell = '/bin/sh';
  if (!isExecutable(shell)) throw new LoginError(`shell ${shell} is not executable`);
  // A configured home applies to the agent's own user only: another user always gets their own.
  if (o.home && !switching && !isDir(o.home)) throw new LoginError(`terminal home ${o.home} is not a directory`);
  const home = o.home && !switching ? o.home : target.home && isDir(target.home) ? target.home : '/';

  const env: Record<string, string> = {
    HOME: home,
    USER: target.name,
    LOGNAME: target.name,
    SHELL: shell,
    PATH: DEFAULT_PATH,
    TERM: 'xterm-256color',
    COLORTERM: 'truecolor',
    LANG: utf8Locale(o.agentEnv),
  };
  const tz = o.agentEnv['TZ'];
  if (tz) env['TZ'] = tz;

  // node-pty can set uid/gid but not supplementary groups, so a user switch goes through setpriv,
  // which execs the shell in place (same pid, same session, same controlling terminal).
  const args = ['-l'];
  if (!switching) return { file: shell, args, env, cwd: home, user: target.name, shell };
  const [file, ...pre] = switchUserArgv(target);
  return { file: file!, args: [...pre, shell, ...args], env, cwd: home, user: target.name, shell };
}

/**
 * The passwd entry of `userName` (default: the agent's own user) and whether running as it needs a
 * user switch (which only a root agent can do). `what` names the action in the error.
 */
export function resolveUser(userName: string | null | undefined, what: string, passwd = readPasswd()): { target: PasswdEntry; switching: boolean } {
  const myUid = process.getuid?.() ?? 0;
  const target = userName ? passwd.find((e) => e.name === userName) : passwd.find((e) => e.uid === myUid);
  if (!target) throw new LoginError(userName ? `no such user ${JSON.stringify(userName)}` : `uid ${myUid} has no /etc/passwd entry`);
  const switching = target.uid !== myUid;
  if (switching && myUid !== 0) throw new LoginError(`the agent runs as uid ${myUid} and cannot ${what} as ${target.name}`);
  return { target, switching };
}

/** argv prefix that runs the rest as `u` with its groups (setpriv execs in place: same pid). */
export function switchUserArgv(u: PasswdEntry): string[] {
  return ['setpriv', '--reuid', String(u.uid), '--regid', String(u.gid), '--init-groups', '--'];
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
