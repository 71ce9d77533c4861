// One simulator process: thousands of lightweight agents speaking the real protocol over `ws`.
// Started by fleet.mjs (child_process.fork); talks to its parent over IPC only.
//
// Each simulated agent: upgrades with its id + secret (or the enrollment token, keeping the secret
// from welcome), sends hello, heartbeats at the interval welcome names (random phase), reconnects
// forever with exponential backoff (1 s doubling to 60 s) and full jitter, honours 503 Retry-After,
// and answers unknown commands with an `error` (as the real agent does). Other messages go to the
// plugged handler modules.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';

const cfg = JSON.parse(process.env.MUSTER_SIM_CONFIG);
const {
  url,
  enrollToken,
  first,
  count,
  idPrefix,
  credsFile,
  localAddresses = [],
  backoffInitialMs = 1000,
  backoffMaxMs = 60_000,
  handshakeTimeoutMs = 60_000,
  handlerModules = [],
  handlerOptions = {},
  statsEveryMs = 250,
  labels = {},
} = cfg;
/** As the real agent's connectWithin: a connect that has not reached the server in this long is given up. */
const CONNECT_TIMEOUT_MS = 15_000;
const connectWithin = (ms) => (o) => {
  const socket = net.connect({ ...o, path: o.socketPath });
  const timer = setTimeout(() => {
    const err = new Error(`connect timed out after ${ms / 1000} s`);
    err.code = 'ETIMEDOUT';
    socket.destroy(err);
  }, ms);
  socket.once('connect', () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
  return socket;
};
const toTarget = (u) => {
  const t = new URL(u);
  if (t.pathname === '/' || t.pathname === '') t.pathname = '/ws/agent';
  return t;
};
// Several servers (cfg.urls, a cluster's nodes): each agent starts at the first (its home node)
// and, as the real agent does with a comma-separated --server, moves to the next on every reconnect;
// the others are ordered by the agent's index, so a dead node's agents spread over all the others.
const targets = (cfg.urls?.length ? cfg.urls : [url]).map(toTarget);
const targetsFor = (index) => {
  if (targets.length < 3) return targets;
  const rest = targets.slice(1);
  const k = index % rest.length;
  return [targets[0], ...rest.slice(k), ...rest.slice(0, k)];
};

const stats = {
  connected: 0,
  welcomes: 0,
  opens: 0,
  closes: 0,
  refused503: 0,
  refused401: 0,
  refusedOther: 0,
  netErrors: 0,
  heartbeats: 0,
  errorsReceived: 0,
  messages: {},
  netErrorKinds: {},
};
const emitQueue = [];
const ctx = {
  options: handlerOptions,
  /** Forwards an event to the parent's onEvent (batched with stats). */
  emit(event) {
    emitQueue.push(event);
  },
};

const handlers = new Map();
const helloHooks = [];
for (const mod of handlerModules) {
  const m = await import(pathToFileURL(path.resolve(mod)).href);
  const h = (m.default ?? m.setup)(ctx);
  for (const [type, fn] of Object.entries(h)) {
    if (type === 'helloExecutions') helloHooks.push(fn);
    else handlers.set(type, fn);
  }
}

let creds = {};
try {
  creds = JSON.parse(fs.readFileSync(credsFile, 'utf8'));
} catch {
  /* first run */
}
let credsDirty = false;
const saveCreds = () => {
  if (!credsDirty) return;
  credsDirty = false;
  fs.mkdirSync(path.dirname(credsFile), { recursive: true });
  fs.writeFileSync(`${credsFile}.tmp`, JSON.stringify(creds));
  fs.renameSync(`${credsFile}.tmp`, credsFile);
};
setInterval(saveCreds, 2000).unref();

const hostIp =
  Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a && !a.internal)?.address ?? '127.0.0.1';

class SimAgent {
  constructor(index) {
    this.index = index;
    this.id = `${idPrefix}-${index}`;
    this.name = `sim-${index}`;
    this.ws = null;
    this.attempt = 0;
    this.retryAfterMs = null;
    this.timer = null;
    this.hbTimer = null;
    this.welcomed = false;
    /** Heartbeats sent since the welcome, the sequence number of the next one that asks for an ack, and when the server was last heard. */
    this.sinceAck = 0;
    this.seq = 0;
    this.lastHeard = 0;
    /** When the last heartbeat that carried `seq` went out, the last seq acknowledged, and the round trip to report next. */
    this.seqSentAt = 0;
    this.ackedSeq = -1;
    this.rttMs = undefined;
    /** The secret came in a welcome and no server accepted it since (see connect). */
    this.unconfirmed = false;
    this.stopped = false;
    this.restartUntil = 0;
    this.localAddress = localAddresses.length ? localAddresses[index % localAddresses.length] : undefined;
    this.targets = targetsFor(index);
    this.targetIndex = 0;
  }

  get secret() {
    return creds[this.id];
  }

  connect() {
    if (this.stopped) return;
    const headers = { 'X-Muster-Agent-Id': this.id };
    if (this.secret) headers.Authorization = `Bearer ${this.secret}`;
    // As the real agent: the token goes too until a server accepted the secret (the server undoes an
    // enrollment whose agent never spoke after its welcome, and then no longer knows the id).
    if (!this.secret || this.unconfirmed) headers['X-Muster-Enroll-Token'] = enrollToken;
    // Zero mask, like the real agent (agent/connection.ts): the server then skips unmasking every byte.
    const ws = new WebSocket(this.targets[this.targetIndex], {
      headers,
      perMessageDeflate: false,
      // As the real agent (agent/connection.ts): 15 s to connect, then up to 60 s for the upgrade's
      // answer (its place in a busy server's accept queue is not given up). Figures before
      // 2026-12-03 (session 16) were measured with one 30 s timeout for both.
      handshakeTimeout: handshakeTimeoutMs,
      createConnection: connectWithin(CONNECT_TIMEOUT_MS),
      localAddress: this.localAddress,
      maxPayload: 64 << 20,
      generateMask: (mask) => void mask.fill(0),
    });
    this.ws = ws;
    this.welcomed = false;
    let refused = false;
    ws.on('unexpected-response', (_req, res) => {
      // terminate() below makes ws emit "closed before the connection was established": our own
      // doing after a refusal, not a network error (the real agent ignores it too).
      refused = true;
      if (res.statusCode === 503) {
        stats.refused503++;
        const ra = Number(res.headers['retry-after']);
        if (Number.isFinite(ra) && ra >= 0) this.retryAfterMs = Math.min(ra * 1000, backoffMaxMs);
      } else if (res.statusCode === 401) stats.refused401++;
      else stats.refusedOther++;
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      stats.opens++;
      const executions = helloHooks.flatMap((f) => f(this) ?? []);
      ws.send(
        JSON.stringify({
          type: 'hello',
          protocol: 1,
          agentVersion: '0.0.0-sim',
          agentId: this.id,
          name: this.name,
          hostname: `sim-host-${this.index}`,
          ips: [hostIp],
          externalIp: null,
          platform: 'linux',
          arch: 'x64',
          os: 'Simulated Linux',
          cpus: 2,
          memoryBytes: 4 * 2 ** 30,
          labels: { sim: 'true', shard: String(this.index % 16), ...labels },
          // 'heartbeat-rtt' (protocol HEARTBEAT_RTT_CAPABILITY), as the real agent: it reports its
          // heartbeats' round trips, so the server does not ping it for them.
          capabilities: ['exec', 'heartbeat-rtt'],
          executions,
        }),
      );
    });
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => (this.lastHeard = Date.now()));
    ws.on('error', (err) => {
      if (refused) return;
      stats.netErrors++;
      const k = err.code ?? err.message.slice(0, 60);
      stats.netErrorKinds[k] = (stats.netErrorKinds[k] ?? 0) + 1;
    });
    ws.on('close', (code) => {
      // Sockets that were connected (welcomed) and closed: a refused or failed attempt is not one.
      if (this.welcomed) stats.closes++;
      // As the real agent (agent/connection.ts): after a `server shutdown` close the backoff is
      // capped at 3 s for a minute.
      if (this.welcomed && code === 1001) this.restartUntil = Date.now() + 60_000;
      if (this.welcomed) stats.connected--;
      this.welcomed = false;
      clearTimeout(this.hbTimer);
      clearInterval(this.pingTimer);
      this.ws = null;
      this.schedule();
    });
  }

  schedule() {
    if (this.stopped) return;
    if (this.targets.length > 1) this.targetIndex = (this.targetIndex + 1) % this.targets.length;
    let delay;
    if (this.retryAfterMs != null) {
      // As the real agent: Retry-After (plus jitter) replaces the backoff and does not grow it.
      delay = this.retryAfterMs + Math.floor(Math.random() * 1000);
      this.retryAfterMs = null;
    } else {
      const max = Date.now() < this.restartUntil ? Math.min(backoffMaxMs, 3000) : backoffMaxMs;
      delay = Math.floor(Math.random() * Math.min(max, backoffInitialMs * 2 ** Math.min(this.attempt, 30)));
      this.attempt++;
    }
    this.timer = setTimeout(() => this.connect(), delay);
  }

  onMessage(data, isBinary) {
    this.lastHeard = Date.now();
    if (isBinary) {
      const h = handlers.get('binary');
      if (h) h(this, data);
      return;
    }
    let m;
    try {
      m = JSON.parse(data.toString());
    } catch {
      return;
    }
    stats.messages[m.type] = (stats.messages[m.type] ?? 0) + 1;
    if (m.type === 'welcome') {
      if (m.secret) {
        creds[this.id] = m.secret;
        credsDirty = true;
        this.unconfirmed = true;
      } else if (this.secret) this.unconfirmed = false;
      if (!this.welcomed) stats.connected++;
      this.welcomed = true;
      stats.welcomes++;
      this.attempt = 0;
      this.heartbeatMs = m.heartbeatIntervalMs;
      // As the real agent (agent/connection.ts): a ping after 3 heartbeat intervals without a word
      // from the server (an ack, any message; the server's ws answers the ping).
      clearInterval(this.pingTimer);
      this.lastHeard = Date.now();
      this.sinceAck = 0;
      this.pingTimer = setInterval(() => {
        if (this.ws?.readyState === WebSocket.OPEN && Date.now() - this.lastHeard >= 3 * this.heartbeatMs) this.ws.ping();
      }, 3 * this.heartbeatMs);
      // After an enrollment, as the real agent: a heartbeat at once tells the server the secret
      // arrived. Then a random phase: a fleet's heartbeats are spread over the interval.
      if (m.secret) this.heartbeat();
      this.hbTimer = setTimeout(() => this.beat(), Math.floor(Math.random() * this.heartbeatMs));
      return;
    }
    if (m.type === 'error') {
      stats.errorsReceived++;
      return;
    }
    // The answer to a heartbeat that carried `seq`: proof the server is alive (lastHeard, above).
    // As the real agent, its round trip goes with the next heartbeat.
    if (m.type === 'heartbeat.ack') {
      if (m.seq === this.seq - 1 && this.ackedSeq !== m.seq) this.rttMs = Math.round((performance.now() - this.seqSentAt) * 100) / 100;
      this.ackedSeq = m.seq;
      return;
    }
    if (m.type === 'restart') {
      this.ws?.close(1000, 'restart requested');
      return;
    }
    const h = typeof m.type === 'string' ? handlers.get(m.type) : undefined;
    if (!h) {
      this.send({ type: 'error', code: 'unknown_type', message: `simulated agent cannot handle ${JSON.stringify(m.type)}`, ref: String(m.type).slice(0, 128) });
      return;
    }
    // What a handler sends at once (exec.started, its output and exec.finished) goes out in one
    // system call: 10,000 simulated agents share the machine's CPUs with the server they measure.
    // The server reads the same bytes either way (they wait in its socket until it gets to it).
    const socket = this.ws?._socket;
    socket?.cork();
    try {
      h(this, m);
    } catch (err) {
      this.send({ type: 'error', code: 'internal', message: String(err).slice(0, 500) });
    } finally {
      socket?.uncork();
    }
  }

  beat() {
    if (!this.welcomed) return;
    this.heartbeat();
    this.hbTimer = setTimeout(() => this.beat(), this.heartbeatMs);
  }

  heartbeat() {
    const t = process.uptime();
    // As the real agent (agent/main.ts): every third heartbeat, the first after a welcome included,
    // carries a sequence number and is acknowledged by the server.
    const seq = this.sinceAck++ % 3 === 0 ? { seq: this.seq++ } : {};
    if (seq.seq !== undefined) this.seqSentAt = performance.now();
    const rtt = this.rttMs !== undefined ? { rttMs: Math.min(600_000, this.rttMs) } : {};
    this.rttMs = undefined;
    this.send({
      type: 'heartbeat',
      ...seq,
      ...rtt,
      metrics: {
        cpuPercent: Math.round(Math.random() * 1000) / 10,
        memUsedBytes: 1_500_000_000 + (this.index % 1000) * 1000,
        memTotalBytes: 4 * 2 ** 30,
        load: [0.5, 0.4, 0.3],
        diskUsedBytes: 10 * 2 ** 30,
        diskTotalBytes: 40 * 2 ** 30,
        uptimeSec: Math.round(t),
        runningExecutions: 0,
        openTerminals: 0,
      },
    });
    stats.heartbeats++;
  }

  send(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  sendBinary(buf) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(buf, { binary: true });
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.hbTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    if (ws?.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'bye', reason: 'simulation stopped' }));
      ws.close(1000, 'bye');
    } else ws?.terminate();
  }
}

const agents = [];
for (let i = first; i < first + count; i++) agents.push(new SimAgent(i));
// Ramp: open sockets in small slices so the worker's own event loop is not the bottleneck.
let next = 0;
const ramp = setInterval(() => {
  for (let n = 0; n < (cfg.rampPerTick ?? 500) && next < agents.length; n++) agents[next++].connect();
  if (next >= agents.length) clearInterval(ramp);
}, 10);

const report = () => {
  const events = emitQueue.splice(0);
  process.send?.({ type: 'stats', stats, events });
};
setInterval(report, statsEveryMs).unref();

process.on('message', (msg) => {
  if (msg?.type === 'stop') {
    clearInterval(ramp);
    for (const a of agents) a.stop();
    saveCreds();
    report();
    setTimeout(() => process.exit(0), 300);
  } else if (msg?.type === 'drop') {
    // Kill every socket without a close handshake (simulates a network cut for this worker).
    for (const a of agents) a.ws?.terminate();
  }
});
process.on('disconnect', () => process.exit(0));
