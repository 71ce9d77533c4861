/**
 * Test harness: starts the real server (dist/server.js) and real agents (dist/agent.js) as
 * child processes, on free ports and throw-away data dirs, against SQLite or MariaDB.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import knexFactory from 'knex';
import { expect } from 'vitest';
import { contractOf } from './openapi-check.js';

/**
 * How long a test server may take to say it listens. A deadline, not a sleep: a server that exits
 * fails at once. Generous because a loaded CI machine (load 30 on 2 cores, seen) running
 * migrations on a shared MariaDB took over 30 s.
 */
const SERVER_START_MS = 90_000;
/**
 * How long a test agent may take to enroll and write its id (the same kind of deadline: an agent
 * that exits fails at once). Node's start plus enrollment took over 10 s at load 20 on 2 cores.
 */
export const AGENT_START_MS = 60_000;

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVER_JS = path.join(ROOT, 'dist', 'server.js');
export const AGENT_JS = path.join(ROOT, 'dist', 'agent.js');
export const ADMIN_PASSWORD = 'admin-password-123';
const TMP_ROOT = path.join(ROOT, 'test', '.tmp');

/** A fresh temp dir under test/.tmp (removed at exit unless KEEP_TMP=1). */
export function tmpDir(prefix: string): string {
  fs.mkdirSync(TMP_ROOT, { recursive: true });
  const d = fs.mkdtempSync(path.join(TMP_ROOT, `${prefix}-`));
  if (!process.env['KEEP_TMP']) {
    // One exit listener for all dirs (a listener per dir trips MaxListenersExceededWarning).
    if (tmpDirs.size === 0)
      process.once('exit', () => {
        for (const x of tmpDirs) fs.rmSync(x, { recursive: true, force: true });
      });
    tmpDirs.add(d);
  }
  return d;
}
const tmpDirs = new Set<string>();

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value (returned) or the timeout passes (throws with `what`). */
export async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 20_000, everyMs = 100): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(everyMs);
  }
}

/* ---------------- databases ---------------- */

export type DbKind = 'sqlite' | 'mysql';
const MYSQL = { host: '127.0.0.1', port: 3306, user: 'root', password: '' };
let mysqlOk: boolean | undefined;

/** Whether MariaDB answers on 127.0.0.1:3306. */
export async function mysqlAvailable(): Promise<boolean> {
  if (mysqlOk !== undefined) return mysqlOk;
  const k = knexFactory({ client: 'mysql2', connection: { ...MYSQL, connectTimeout: 2000 } });
  try {
    await k.raw('select 1');
    mysqlOk = true;
  } catch {
    mysqlOk = false;
  } finally {
    await k.destroy();
  }
  return mysqlOk;
}

/**
 * Databases to run a suite against: SQLite always; MariaDB when it answers. With CI=true MariaDB is
 * mandatory (a missing one fails); outside CI its absence is announced loudly and the suite skips it.
 */
export async function databases(): Promise<DbKind[]> {
  if (await mysqlAvailable()) return ['sqlite', 'mysql'];
  if (process.env['CI'] === 'true') throw new Error('CI=true but MariaDB is not reachable on 127.0.0.1:3306');
  process.stderr.write('\n!!! MariaDB not reachable on 127.0.0.1:3306: MySQL variants of this suite are SKIPPED !!!\n\n');
  return ['sqlite'];
}

/**
 * Creates a throw-away MariaDB database (utf8mb4 unless told otherwise, e.g. latin1 as an old
 * server's default); returns its URL, its name and a drop function.
 */
export async function createMysqlDatabase(
  charset: { charset: string; collation: string } = { charset: 'utf8mb4', collation: 'utf8mb4_unicode_ci' },
): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `muster_t_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const k = knexFactory({ client: 'mysql2', connection: MYSQL });
  await k.raw(`CREATE DATABASE \`${name}\` CHARACTER SET ${charset.charset} COLLATE ${charset.collation}`);
  await k.destroy();
  return {
    url: `mysql://root:@127.0.0.1:3306/${name}`,
    name,
    drop: async () => {
      const k2 = knexFactory({ client: 'mysql2', connection: MYSQL });
      await k2.raw(`DROP DATABASE IF EXISTS \`${name}\``).catch(() => {});
      await k2.destroy();
    },
  };
}

/** MUSTER_DB_URL for a kind (creating a MariaDB database when needed). */
export async function dbUrlFor(kind: DbKind, dataDir: string): Promise<{ url: string; drop(): Promise<void> }> {
  if (kind === 'mysql') return createMysqlDatabase();
  return { url: `sqlite:${path.join(dataDir, 'muster.db')}`, drop: async () => {} };
}

/* ---------------- server ---------------- */

/** A TCP port free right now (for a config that must name its port: nginx, a node's MUSTER_NODE_URL). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface ServerOptions {
  db?: DbKind;
  /** Reuse a database URL (server restart tests). */
  dbUrl?: string;
  dataDir?: string;
  port?: number;
  env?: Record<string, string>;
}

export interface TestServer {
  proc: ChildProcess;
  port: number;
  url: string;
  wsUrl: string;
  dataDir: string;
  dbUrl: string;
  enrollToken: string;
  output: () => string;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
  /** SIGKILL (a crash). */
  kill(): Promise<void>;
  /** Starts a new server process on the same port, data dir and database. */
  restart(): Promise<TestServer>;
  drop(): Promise<void>;
}

/** Starts dist/server.js on a free port; resolves once it listens. */
export async function startServer(opts: ServerOptions = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? tmpDir('server');
  const db = opts.dbUrl ? { url: opts.dbUrl, drop: async () => {} } : await dbUrlFor(opts.db ?? 'sqlite', dataDir);
  const enrollToken = 'test-enroll-token-0123456789';
  const env = {
    ...process.env,
    MUSTER_PORT: String(opts.port ?? 0),
    MUSTER_HOST: '127.0.0.1',
    MUSTER_DATA_DIR: dataDir,
    MUSTER_DB_URL: db.url,
    MUSTER_ADMIN_PASSWORD: ADMIN_PASSWORD,
    MUSTER_ENROLL_TOKEN: enrollToken,
    MUSTER_LOCAL_AGENT: '0',
    MUSTER_LOG_LEVEL: 'info',
    ...opts.env,
  };
  const proc = spawn(process.execPath, [SERVER_JS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.length > 4e6) out = out.slice(-2e6);
  });
  proc.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start within ${SERVER_START_MS} ms:\n${out}`)), SERVER_START_MS);
    const onData = () => {
      const m = /"port":(\d+),"msg":"listening"/.exec(out);
      if (m) {
        clearTimeout(t);
        proc.stdout!.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`server exited with ${code}:\n${out}`));
    });
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  // MUSTER_TEST_LOG_DIR keeps every server's log once it exits (to look for errors a test did not assert on).
  const logDir = process.env['MUSTER_TEST_LOG_DIR'];
  if (logDir) {
    const test = path.basename(expect.getState().testPath ?? 'unknown');
    proc.once('exit', () => {
      fs.mkdirSync(logDir, { recursive: true });
      fs.writeFileSync(path.join(logDir, `${test}-${port}-${proc.pid}.log`), out);
    });
  }
  const s: TestServer = {
    proc,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    dataDir,
    dbUrl: db.url,
    enrollToken,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
    restart: () => startServer({ ...opts, dataDir, dbUrl: db.url, port }),
    drop: db.drop,
  };
  servers.add(s);
  return s;
}

/* ---------------- agents ---------------- */

export interface AgentOptions {
  name?: string;
  labels?: Record<string, string>;
  stateDir?: string;
  token?: string | null;
  args?: string[];
  env?: Record<string, string>;
  /** Wait until the server lists the agent online (needs an Api). */
  serverUrl?: string;
}

export interface TestAgent {
  proc: ChildProcess;
  stateDir: string;
  agentId: string;
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts dist/agent.js against a server (fast backoff so tests do not wait a minute). */
export function startAgent(server: { wsUrl: string; enrollToken: string }, o: AgentOptions = {}): TestAgent {
  const stateDir = o.stateDir ?? tmpDir('agent');
  const args = ['--server', o.serverUrl ?? server.wsUrl, '--state-dir', stateDir, '--health-port=-1'];
  if (o.token !== null) args.push('--token', o.token ?? server.enrollToken);
  if (o.name) args.push('--name', o.name);
  for (const [k, v] of Object.entries(o.labels ?? {})) args.push('--label', `${k}=${v}`);
  args.push(...(o.args ?? []));
  const proc = spawn(process.execPath, [AGENT_JS, ...args], {
    env: { ...process.env, ...hermeticAgentEnv(), MUSTER_AGENT_BACKOFF_INITIAL_MS: '200', MUSTER_AGENT_BACKOFF_MAX_MS: '1000', ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.length > 4e6) out = out.slice(-2e6);
  });
  proc.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  const idFile = path.join(stateDir, 'agent-id');
  const a: TestAgent = {
    proc,
    stateDir,
    output: () => out,
    exited,
    get agentId() {
      return fs.readFileSync(idFile, 'utf8').trim();
    },
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return (await exited).code;
    },
  };
  agents.add(a);
  return a;
}

/**
 * What keeps an agent a test starts independent of the machine it runs on: its own empty HOME (the
 * terminals' HOME and starting directory too) and a known shell, so no test reads the real user's
 * dotfiles (a slow or broken ~/.bashrc on the host must not stall or change any test). A test that
 * wants a login shell with dotfiles writes them into its own home (see terminal-login.test.ts).
 */
export function hermeticAgentEnv(home = tmpDir('home')): Record<string, string> {
  return { HOME: home, MUSTER_AGENT_TERMINAL_HOME: home, MUSTER_AGENT_SHELL: '/bin/bash' };
}

/** Waits until the agent wrote its id (it does so before connecting). */
export async function agentId(a: TestAgent): Promise<string> {
  const deadline = Date.now() + AGENT_START_MS;
  for (;;) {
    try {
      const id = a.agentId;
      if (id) return id;
    } catch {
      // not written yet
    }
    if (a.proc.exitCode !== null || a.proc.signalCode !== null) {
      throw new Error(`agent exited (${a.proc.exitCode ?? a.proc.signalCode}) before writing its id:\n${a.output().slice(-4000)}`);
    }
    if (Date.now() > deadline) throw new Error(`agent did not write its id within ${AGENT_START_MS} ms:\n${a.output().slice(-4000)}`);
    await sleep(20);
  }
}

const servers = new Set<TestServer>();
const agents = new Set<TestAgent>();
/** Kills every process this harness started (call in afterAll). */
export async function cleanup(): Promise<void> {
  for (const a of agents) {
    if (a.proc.signalCode === 'SIGSTOP') a.proc.kill('SIGCONT');
    if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
  }
  for (const s of servers) {
    await s.kill();
    await s.drop();
  }
  agents.clear();
  servers.clear();
  // vitest's fork workers do not always run 'exit' listeners: remove the temp dirs here too.
  if (!process.env['KEEP_TMP']) {
    for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
    tmpDirs.clear();
  }
}

/* ---------------- REST ---------------- */

export interface Res<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/** A REST client holding a session cookie or bearer token. */
export class Api {
  cookie = '';
  bearer = '';
  /** Check each answer against GET /api/openapi.json (off only for a test of something else that answers off-contract on purpose). */
  checkContract = true;
  constructor(readonly base: string) {}

  static async login(base: string, username = 'admin', password = ADMIN_PASSWORD): Promise<Api> {
    const api = new Api(base);
    const r = await api.post('/api/auth/login', { username, password });
    if (r.status !== 200) throw new Error(`login failed: ${r.status} ${JSON.stringify(r.body)}`);
    return api;
  }

  async req<T = any>(method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res<T>> {
    const h: Record<string, string> = { ...headers };
    if (body !== undefined && !(body instanceof Uint8Array)) h['content-type'] = 'application/json';
    if (this.cookie) h['cookie'] = this.cookie;
    if (this.bearer) h['authorization'] = `Bearer ${this.bearer}`;
    const res = await fetch(this.base + p, {
      method,
      headers: h,
      body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body),
    });
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0]!;
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (this.checkContract) {
      // Every answer is checked against the server's own OpenAPI document.
      const contract = await contractOf(this.base);
      const problems = contract?.problems(method, p, res.status, res.headers.get('content-type'), text) ?? [];
      if (problems.length) throw new Error(`answer does not match /api/openapi.json: ${problems.join('\n')}`);
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }
  get<T = any>(p: string) {
    return this.req<T>('GET', p);
  }
  post<T = any>(p: string, body?: unknown) {
    return this.req<T>('POST', p, body ?? {});
  }
  patch<T = any>(p: string, body: unknown) {
    return this.req<T>('PATCH', p, body);
  }
  delete<T = any>(p: string) {
    return this.req<T>('DELETE', p);
  }

  /** Creates a user with `role` (as admin) and returns an Api logged in as that user. */
  async userWithRole(role: 'viewer' | 'operator' | 'admin', username = `${role}-${Math.random().toString(36).slice(2, 7)}`): Promise<Api> {
    const r = await this.post('/api/users', { username, password: 'password-123', role });
    if (r.status !== 201) throw new Error(`user create failed: ${r.status} ${JSON.stringify(r.body)}`);
    return Api.login(this.base, username, 'password-123');
  }

  /** Waits until GET /api/agents/:id reports `status`. */
  async waitAgent(id: string, status: 'online' | 'offline', timeoutMs = 20_000): Promise<any> {
    return waitFor(
      async () => {
        const r = await this.get(`/api/agents/${id}`);
        return r.status === 200 && r.body.status === status ? r.body : null;
      },
      `agent ${id} ${status}`,
      timeoutMs,
    );
  }
}

export { os };

/* ---------------- console socket ---------------- */

import WebSocket from 'ws';

/** A console WebSocket with the Api's session (or token) and an allowed Origin; collects JSON messages. */
export async function consoleSocket(
  server: { url: string; wsUrl: string },
  api: Api,
  origin: string | null = server.url,
): Promise<{
  ws: WebSocket;
  messages: any[];
  binary: Buffer[];
  next(pred: (m: any) => boolean, timeoutMs?: number, what?: string): Promise<any>;
  close(): void;
}> {
  const headers: Record<string, string> = {};
  if (api.cookie) headers['cookie'] = api.cookie;
  if (api.bearer) headers['authorization'] = `Bearer ${api.bearer}`;
  if (origin) headers['origin'] = origin;
  const ws = new WebSocket(`${server.wsUrl}/ws/console`, { headers });
  const messages: any[] = [];
  const binary: Buffer[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (d, isBinary) => {
    if (isBinary) binary.push(d as Buffer);
    else messages.push(JSON.parse(d.toString()));
    for (const w of waiters) w();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`console upgrade refused: ${res.statusCode}`)));
  });
  const next = (pred: (m: any) => boolean, timeoutMs = 15_000, what = 'console message') =>
    new Promise<any>((resolve, reject) => {
      let seen = 0;
      const check = () => {
        for (; seen < messages.length; seen++) {
          const m = messages[seen];
          if (pred(m)) {
            waiters.delete(check);
            clearTimeout(t);
            resolve(m);
            return;
          }
        }
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(messages.slice(-5))}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  return { ws, messages, binary, next, close: () => ws.close() };
}
