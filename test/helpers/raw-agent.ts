/**
 * Raw protocol clients for tests that must send what a well-behaved agent never would:
 * crafted messages, oversized frames, foreign ids. They authenticate like a real agent, with
 * credentials read from a real agent's state dir (or the enrollment token), over plain `ws`.
 */
import fs from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import WebSocket from 'ws';
import { waitFor } from './harness.js';

export interface Creds {
  agentId: string;
  secret?: string;
  enrollToken?: string;
}

/** Reads agent-id and agent-secret from a real agent's state dir. */
export function readCreds(stateDir: string): Creds & { secret: string } {
  const agentId = fs.readFileSync(path.join(stateDir, 'agent-id'), 'utf8').trim();
  // The server lists an agent online just before its welcome (carrying the secret) reaches the
  // agent and is stored: wait briefly for the file rather than race it.
  const secretFile = path.join(stateDir, 'agent-secret');
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(secretFile) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  const secret = fs.readFileSync(secretFile, 'utf8').trim();
  return { agentId, secret };
}

/** Waits until the agent has stored its secret (it does so on welcome, just after the server lists it online). */
export async function waitCreds(stateDir: string): Promise<Creds & { secret: string }> {
  return waitFor(
    () => {
      try {
        return readCreds(stateDir);
      } catch {
        return null;
      }
    },
    `agent secret in ${stateDir}`,
    10_000,
    20,
  );
}

/** Upgrade headers an agent sends for these credentials. */
export function agentHeaders(c: Creds): Record<string, string> {
  const h: Record<string, string> = { 'X-Muster-Agent-Id': c.agentId };
  if (c.secret) h['Authorization'] = `Bearer ${c.secret}`;
  if (c.enrollToken) h['X-Muster-Enroll-Token'] = c.enrollToken;
  return h;
}

/** A syntactically valid hello for `agentId`. */
export function helloFor(agentId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'hello',
    protocol: 1,
    agentVersion: '0.0.0-raw',
    agentId,
    name: `raw-${agentId.slice(0, 8)}`,
    hostname: 'raw-host',
    ips: ['10.0.0.1'],
    externalIp: null,
    platform: 'linux',
    arch: 'x64',
    os: 'Raw OS',
    cpus: 1,
    memoryBytes: 1024,
    labels: {},
    capabilities: [],
    executions: [],
    ...extra,
  };
}

export const sampleMetrics = (cpuPercent = 12.5) => ({
  cpuPercent,
  memUsedBytes: 1,
  memTotalBytes: 2,
  load: [0.1, 0.2, 0.3],
  diskUsedBytes: 3,
  diskTotalBytes: 4,
  uptimeSec: 5,
  runningExecutions: 0,
  openTerminals: 0,
});

/** Result of an upgrade attempt that the server refused before a socket existed. */
export async function upgradeStatus(
  wsUrl: string,
  headers: Record<string, string>,
  urlPath = '/ws/agent',
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const ws = new WebSocket(`${wsUrl}${urlPath}`, { headers });
  return new Promise((resolve, reject) => {
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => {
        body += d.toString();
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
        ws.terminate();
      });
    });
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('upgrade unexpectedly accepted'));
    });
    ws.once('error', (e) => reject(e));
  });
}

export interface RawAgent {
  ws: WebSocket;
  messages: any[];
  closed: Promise<{ code: number; reason: string }>;
  isOpen(): boolean;
  send(m: unknown): void;
  sendRaw(data: string | Buffer, binary?: boolean): void;
  next(pred: (m: any) => boolean, what?: string, timeoutMs?: number): Promise<any>;
  close(): void;
}

/** Opens an agent socket with `creds`; does not send hello (the caller decides what to send). */
export async function rawAgent(wsUrl: string, creds: Creds, opts: { maxPayload?: number } = {}): Promise<RawAgent> {
  const ws = new WebSocket(`${wsUrl}/ws/agent`, { headers: agentHeaders(creds), perMessageDeflate: false, maxPayload: opts.maxPayload ?? 64 << 20 });
  const messages: any[] = [];
  ws.on('message', (d, bin) => {
    if (!bin) messages.push(JSON.parse(d.toString()));
  });
  const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_q, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  let seen = 0;
  return {
    ws,
    messages,
    closed,
    isOpen: () => ws.readyState === WebSocket.OPEN,
    send: (m) => ws.send(JSON.stringify(m)),
    sendRaw: (d, binary = false) => ws.send(d, { binary }),
    // Each call consumes messages up to the match, so repeated waits see new messages only.
    next: async (pred, what = 'agent message', timeoutMs = 10_000) => {
      return waitFor(
        () => {
          for (; seen < messages.length;) {
            const m = messages[seen++];
            if (pred(m)) return m;
          }
          return null;
        },
        what,
        timeoutMs,
        10,
      );
    },
    close: () => ws.close(),
  };
}

/** Opens a raw agent and completes hello → welcome. */
export async function helloAgent(wsUrl: string, creds: Creds, hello: Record<string, unknown> = {}): Promise<RawAgent & { welcome: any }> {
  const a = await rawAgent(wsUrl, creds);
  a.send(helloFor(creds.agentId, hello));
  const welcome = await a.next((m) => m.type === 'welcome' || m.type === 'error', 'welcome');
  if (welcome.type !== 'welcome') throw new Error(`hello refused: ${JSON.stringify(welcome)}`);
  // A real agent heartbeats at once after every welcome; after an enrollment's that is what tells
  // the server the secret arrived (a socket closed before it has its enrollment undone).
  if (welcome.secret) a.send({ type: 'heartbeat', seq: 0, metrics: sampleMetrics() });
  return Object.assign(a, { welcome });
}

/** A knex handle on a test server's database (SQLite file or MariaDB), for checking what is stored. */
export function openTestDb(dbUrl: string): Knex {
  if (dbUrl.startsWith('sqlite:')) {
    return knexFactory({
      client: 'better-sqlite3',
      connection: { filename: dbUrl.slice('sqlite:'.length), readonly: true } as Knex.Sqlite3ConnectionConfig,
      useNullAsDefault: true,
    });
  }
  const u = new URL(dbUrl);
  return knexFactory({
    client: 'mysql2',
    connection: {
      host: u.hostname,
      port: Number(u.port || 3306),
      user: decodeURIComponent(u.username),
      password: decodeURIComponent(u.password),
      database: u.pathname.slice(1),
    },
  });
}

/** Runs `fn` with a short-lived database handle. */
export async function withDb<T>(dbUrl: string, fn: (db: Knex) => Promise<T>): Promise<T> {
  const db = openTestDb(dbUrl);
  try {
    return await fn(db);
  } finally {
    await db.destroy();
  }
}

/** Parses Prometheus text into `name{labels}` → value. */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** Fetches /metrics of a server and parses it. */
export async function scrape(url: string): Promise<Map<string, number>> {
  const r = await fetch(`${url}/metrics`);
  return parseProm(await r.text());
}
