/**
 * The agent's reconnect after a server restart: a `server shutdown` close (1001) caps the backoff at
 * MUSTER_AGENT_RESTART_BACKOFF_MAX_MS for a while, so the agent keeps knocking every few hundred ms
 * while nothing listens; any other close keeps the exponential backoff. Real sockets: a ws server
 * on a free port, closed and reopened on the same port.
 */
import http from 'node:http';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { ServerConnection } from '../../agent/connection.js';
import { createAgentLog } from '../../agent/log.js';
import { AgentState } from '../../agent/state.js';
import type { Hello } from '../../protocol/index.js';

const OUTAGE_MS = 3000;
const stops: Array<() => void> = [];
afterEach(() => {
  for (const s of stops.splice(0)) s();
});

/** A welcoming ws server on `port` (0: free); `down(code)` closes every socket with `code` and stops listening. */
async function server(port = 0): Promise<{ port: number; down(code: number): Promise<void> }> {
  const h = http.createServer();
  const wss = new WebSocketServer({ server: h });
  wss.on('connection', (ws) => {
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.type === 'hello')
        ws.send(JSON.stringify({ type: 'welcome', protocol: 1, agentId: m.agentId, heartbeatIntervalMs: 60_000, serverTime: Date.now() }));
    });
  });
  await new Promise<void>((r) => h.listen(port, '127.0.0.1', r));
  const down = async (code: number) => {
    for (const ws of wss.clients) ws.close(code, 'bye');
    wss.close();
    h.closeAllConnections();
    await new Promise<void>((r) => h.close(() => r()));
  };
  stops.push(() => void down(1001).catch(() => {}));
  return { port: (h.address() as AddressInfo).port, down };
}

/** Connects an agent; counts its failed attempts while the server is down. */
function agent(port: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-backoff-'));
  let welcomes = 0;
  let failures = 0;
  const log = createAgentLog('debug', {}, {
    write: (line: string) => {
      if (line.includes('cannot connect')) failures++;
    },
  } as never);
  const state = new AgentState(dir);
  const conn = new ServerConnection({
    serverUrl: `ws://127.0.0.1:${port}`,
    enrollToken: undefined,
    caFile: undefined,
    state,
    log,
    backoffInitialMs: 1000,
    backoffMaxMs: 60_000,
    restartBackoffMaxMs: 300,
    restartWindowMs: 60_000,
    maxPayload: 64 * 1024 * 1024,
    buildHello: () => ({ type: 'hello', protocol: 1, agentId: state.agentId }) as unknown as Hello,
    handlers: {} as never,
    onTermData: () => {},
    onWelcome: () => void welcomes++,
    onDisconnected: () => {},
  });
  conn.start();
  stops.push(() => {
    void conn.stop('test over');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { welcomes: () => welcomes, failures: () => failures };
}

async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('agent reconnect backoff after a server restart', () => {
  it('after `server shutdown` (1001) it keeps retrying within the short cap and is back soon after the server', async () => {
    const s = await server();
    const a = agent(s.port);
    await until(() => a.welcomes() === 1, 10_000, 'first welcome');
    await s.down(1001);
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    // Delays below 300 ms: at least 10 attempts in 3 s (exponential from 1 s would make 2-4).
    expect(a.failures()).toBeGreaterThanOrEqual(10);
    const back = Date.now();
    await server(s.port);
    await until(() => a.welcomes() === 2, 5000, 'welcome after the restart');
    expect(Date.now() - back).toBeLessThan(1500);
  });

  it('after any other close the backoff stays exponential', async () => {
    const s = await server();
    const a = agent(s.port);
    await until(() => a.welcomes() === 1, 10_000, 'first welcome');
    await s.down(1011);
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    expect(a.failures()).toBeGreaterThanOrEqual(1);
    expect(a.failures()).toBeLessThan(8);
  });
});
