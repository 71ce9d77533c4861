/**
 * The agent's check of the server's liveness: it pings only a server it has not heard from for
 * three heartbeat intervals (acks of its heartbeats, or any message, prove the server alive), so a
 * healthy server answers no pings; a server that says nothing is pinged and kept as long as it
 * answers (a cut once came from a silence limit that timer lateness crossed between two pings:
 * the cut now waits for a ping's own answer), and one that answers nothing at all is cut. Real sockets: a ws server on a free port that welcomes with a 250 ms
 * heartbeat interval (the check runs every 750 ms, a cut after 1.5 s of silence: wide enough that
 * a test process starved by a loaded machine for a few hundred ms does not look like a dead peer).
 */
import http from 'node:http';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { ServerConnection } from '../../agent/connection.js';
import { createAgentLog } from '../../agent/log.js';
import { AgentState } from '../../agent/state.js';
import type { Hello } from '../../protocol/index.js';

const HEARTBEAT_MS = 250;
const stops: Array<() => void> = [];
afterEach(() => {
  for (const s of stops.splice(0)) s();
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A welcoming ws server: `talk` sends an ack every heartbeat interval; counts the pings it receives and the sockets it accepted. */
async function server(mode: 'talk' | 'silent' | 'deaf') {
  const h = http.createServer();
  const wss = new WebSocketServer({ server: h, autoPong: mode !== 'deaf' });
  const seen = { pings: 0, sockets: 0 };
  wss.on('connection', (ws: WebSocket) => {
    seen.sockets++;
    ws.on('ping', () => seen.pings++);
    let timer: NodeJS.Timeout | undefined;
    ws.on('close', () => clearInterval(timer));
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (m.type !== 'hello') return;
      ws.send(JSON.stringify({ type: 'welcome', protocol: 1, agentId: m.agentId, heartbeatIntervalMs: HEARTBEAT_MS, serverTime: Date.now() }));
      let seq = 0;
      if (mode === 'talk') timer = setInterval(() => ws.send(JSON.stringify({ type: 'heartbeat.ack', seq: seq++ })), HEARTBEAT_MS);
    });
  });
  await new Promise<void>((r) => h.listen(0, '127.0.0.1', r));
  stops.push(() => {
    for (const ws of wss.clients) ws.terminate();
    wss.close();
    h.closeAllConnections();
    h.close();
  });
  return { port: (h.address() as AddressInfo).port, seen };
}

function agent(port: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-liveness-'));
  const state = new AgentState(dir);
  let welcomes = 0;
  const conn = new ServerConnection({
    serverUrl: `ws://127.0.0.1:${port}`,
    enrollToken: undefined,
    caFile: undefined,
    state,
    log: createAgentLog('error', {}),
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    maxPayload: 64 * 1024 * 1024,
    buildHello: () => ({ type: 'hello', protocol: 1, agentId: state.agentId }) as unknown as Hello,
    handlers: { 'heartbeat.ack': () => {} } as never,
    onTermData: () => {},
    onWelcome: () => void welcomes++,
    onDisconnected: () => {},
  });
  conn.start();
  stops.push(() => {
    void conn.stop('test over');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { welcomes: () => welcomes };
}

describe("the agent's liveness check of the server", () => {
  it('a server heard from every interval is never pinged', async () => {
    const s = await server('talk');
    const a = agent(s.port);
    await sleep(3000);
    expect(a.welcomes()).toBe(1);
    expect(s.seen.pings).toBe(0);
  });

  it('a silent server is pinged (its pongs keep the socket), one that answers nothing is cut', async () => {
    const silent = await server('silent');
    const a = agent(silent.port);
    await sleep(4000);
    expect(silent.seen.pings).toBeGreaterThanOrEqual(2);
    expect(a.welcomes()).toBe(1);
    expect(silent.seen.sockets).toBe(1);

    const deaf = await server('deaf');
    const b = agent(deaf.port);
    await sleep(4000);
    expect(deaf.seen.pings).toBeGreaterThanOrEqual(1);
    expect(deaf.seen.sockets).toBeGreaterThanOrEqual(2);
    expect(b.welcomes()).toBeGreaterThanOrEqual(2);
  });
});
