/**
 * Issue 10, defect 5: closing a terminal right after opening it must never signal the agent's own
 * process group. node-pty returns before its child has called setsid(); until then the child
 * shares the agent's process group, and a tree kill that signalled "the group of every process it
 * found" hung up the agent's group (under `npm start`: the server and the agent with it).
 *
 * The agent runs under a wrapper shell started in a new process group: the wrapper forks a
 * `sleep` sentinel into that group and then execs the agent, so the agent leads the group and
 * the sentinel shares it. A SIGHUP to the group kills the sentinel (default action) and makes
 * the agent log "config reloaded" (its SIGHUP handler): the tests assert neither happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { AGENT_START_MS, AGENT_JS, Api, cleanup, hermeticAgentEnv, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { TermClient } from '../helpers/terminal-client.js';

/** Open-then-immediately-close cycles per test. */
const CYCLES = 300;
/** Cycles in flight at once (the agent forks while earlier closes are being handled). */
const PARALLEL = 4;

/** /proc/<pid>/stat fields after the command name: state and process group. */
function stat(pid: number): { state: string; pgrp: number } | null {
  try {
    const t = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = t.slice(t.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, pgrp: Number(f[2]) };
  } catch {
    return null;
  }
}
const alive = (pid: number) => {
  const s = stat(pid);
  return s !== null && s.state !== 'Z';
};

interface Wrapped {
  proc: ChildProcess;
  sentinel: number;
  stateDir: string;
  output(): string;
  kill(): void;
}
const wrapped: Wrapped[] = [];

/** Starts dist/agent.js as the leader of a new process group that also holds a `sleep` sentinel. */
async function startWrappedAgent(serverUrl: string, token: string): Promise<Wrapped> {
  const stateDir = tmpDir('hangup-agent');
  const sentinelFile = path.join(stateDir, 'sentinel.pid');
  // sh leads a new process group (detached); `sleep` inherits it; exec keeps the agent in it, as its leader.
  const script = 'sleep 100000 & echo $! > "$1"; shift; exec "$@"';
  const proc = spawn(
    'sh',
    [
      '-c',
      script,
      'sh',
      sentinelFile,
      process.execPath,
      AGENT_JS,
      '--server',
      serverUrl,
      '--token',
      token,
      '--state-dir',
      stateDir,
      '--health-port=-1',
      '--terminal-max-sessions',
      String(PARALLEL * 4),
    ],
    {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...hermeticAgentEnv(), MUSTER_AGENT_BACKOFF_INITIAL_MS: '200', MUSTER_AGENT_BACKOFF_MAX_MS: '1000' },
    },
  );
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.length > 4e6) out = out.slice(-2e6);
  });
  proc.stderr!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const sentinel = Number(await waitFor(() => fs.existsSync(sentinelFile) && fs.readFileSync(sentinelFile, 'utf8').trim(), 'sentinel pid'));
  // The whole wrapper group (agent and sentinel); the test's own group is not in it.
  const w: Wrapped = {
    proc,
    sentinel,
    stateDir,
    output: () => out,
    kill: () => {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    },
  };
  wrapped.push(w);
  expect(stat(sentinel)?.pgrp).toBe(proc.pid);
  return w;
}

/** The agent and its process group came through untouched. */
function expectUntouched(w: Wrapped): void {
  expect(alive(w.sentinel), "sentinel in the agent's process group is alive").toBe(true);
  expect(alive(w.proc.pid!), 'agent is alive').toBe(true);
  expect(w.proc.exitCode).toBeNull();
  expect(w.output()).not.toMatch(/config reloaded/); // the agent's SIGHUP handler never ran
}

afterAll(async () => {
  for (const w of wrapped) w.kill();
  await cleanup();
});

describe("terminal close never signals the agent's process group (defect 5)", () => {
  let s: TestServer;
  let op: Api;
  let w: Wrapped;
  let agentId = '';

  beforeAll(async () => {
    s = await startServer();
    const admin = await Api.login(s.url);
    op = await admin.userWithRole('operator');
    w = await startWrappedAgent(s.wsUrl, s.enrollToken);
    agentId = await waitFor(
      () => {
        try {
          return fs.readFileSync(path.join(w.stateDir, 'agent-id'), 'utf8').trim();
        } catch {
          return '';
        }
      },
      'agent id',
      AGENT_START_MS,
    );
    await admin.waitAgent(agentId, 'online');
  }, 2 * AGENT_START_MS);

  it(`through the server: ${CYCLES} consoles open a terminal and close it at once`, async () => {
    const c = await TermClient.connect(s, op);
    let started = 0;
    const reasons = new Map<string, number>();
    const worker = async () => {
      while (started < CYCLES) {
        started++;
        const t = await c.open(agentId);
        t.close();
        const closed = await t.closedP;
        reasons.set(closed.reason, (reasons.get(closed.reason) ?? 0) + 1);
        if (!alive(w.sentinel)) throw new Error(`the sentinel in the agent's process group died after ${started} cycles`);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    c.close();
    expect(
      [...reasons.keys()].every((r) => /closed by/.test(r)),
      JSON.stringify([...reasons]),
    ).toBe(true);
    expectUntouched(w);
    // The agent still serves: one more terminal works end to end.
    const c2 = await TermClient.connect(s, op);
    const t = await c2.open(agentId);
    expect(await t.run('echo still-$((40+2))')).toContain('still-42');
    t.close();
    await t.closedP;
    c2.close();
  }, 600_000);

  it('the server ignores SIGHUP, and its local agent runs in a process group of its own', async () => {
    const ls = await startServer({ env: { MUSTER_LOCAL_AGENT: '1' } });
    const pid = Number(await waitFor(() => /"pid":(\d+)[^\n]*"msg":"local agent started"/.exec(ls.output())?.[1], 'local agent started'));
    const admin = await Api.login(ls.url);
    await waitFor(async () => (await admin.get('/api/agents?status=online')).body.total === 1, 'local agent online', 30_000);
    expect(stat(pid)?.pgrp).toBe(pid);
    expect(stat(pid)?.pgrp).not.toBe(stat(ls.proc.pid!)?.pgrp);
    ls.proc.kill('SIGHUP');
    await waitFor(() => /SIGHUP/.test(ls.output()), 'SIGHUP logged');
    expect(ls.proc.exitCode).toBeNull();
    expect((await admin.get('/api/auth/me')).status).toBe(200);
    // A server killed outright takes its local agent with it (no longer through the group, but
    // through the agent's IPC lifeline), so a restarted server never finds a second agent running.
    await ls.kill();
    await waitFor(() => !alive(pid), 'local agent gone with its server', 15_000);
  }, 120_000);
});

/**
 * The same at the agent's wire: term.open and term.close arrive in one read, so the close is
 * handled in the tick that forked the shell, before the child could call setsid(). The real
 * server never sends them back to back, but a link that was stalled can deliver them together;
 * this is the window in which the old tree kill hung up the agent's group. The test plays the
 * server's side of the agent socket (hello → welcome), nothing more.
 */
describe('term.open and term.close in one read (defect 5, the race itself)', () => {
  let wss: WebSocketServer;
  let w: Wrapped;
  let sock: WebSocket;
  const exits = new Map<string, (m: any) => void>();

  beforeAll(async () => {
    wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((r) => wss.once('listening', () => r()));
    const welcomed = new Promise<WebSocket>((resolve) => {
      wss.on('connection', (ws) => {
        ws.on('message', (d, isBinary) => {
          if (isBinary) return;
          const m = JSON.parse(d.toString());
          if (m.type === 'hello') {
            ws.send(
              JSON.stringify({
                type: 'welcome',
                protocol: m.protocol,
                agentId: m.agentId,
                heartbeatIntervalMs: 5000,
                serverTime: Date.now(),
                secret: 's'.repeat(43),
              }),
            );
            resolve(ws);
          } else if (m.type === 'term.exit') {
            exits.get(m.sessionId)?.(m);
          }
        });
      });
    });
    w = await startWrappedAgent(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`, 'test-enroll-token-0123456789');
    sock = await welcomed;
  }, 60_000);

  afterAll(async () => {
    w?.kill();
    await new Promise<void>((r) => wss.close(() => r()));
  });

  it(`${CYCLES} sessions closed in the tick that opened them`, async () => {
    let started = 0;
    const worker = async () => {
      while (started < CYCLES) {
        const n = started++;
        const sessionId = `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
        const exited = new Promise<any>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`no term.exit for cycle ${n}`)), 30_000);
          exits.set(sessionId, (m) => {
            clearTimeout(t);
            resolve(m);
          });
        });
        sock.send(JSON.stringify({ type: 'term.open', sessionId, cols: 80, rows: 24 }));
        sock.send(JSON.stringify({ type: 'term.close', sessionId, reason: 'closed at once' }));
        const m = await exited;
        expect(m.reason).toBe('closed at once');
        if (!alive(w.sentinel)) throw new Error(`the sentinel in the agent's process group died after ${n + 1} cycles`);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    expectUntouched(w);
  }, 600_000);
});
