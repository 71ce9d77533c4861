// Terminal benchmark: keystroke round trip through the relay (idle and under load) and the
// throughput of a 50 MB `cat` to a headless console that acknowledges like xterm.js, each next
// to the same measurement on node-pty directly, in the same run.
//
//   npm run bench -- terminal            (via bench/run.mjs, after a build)
//   node bench/terminal.mjs [--keys N] [--mb N] [--fleet N] [--json]   (standalone; builds dist/ if missing)
//   --only idle|load|throughput: one phase; --hops DIR: where each keystroke's round trip went, hop
//   by hop (bench/lib/hop-trace.mjs in the server, the agent and this console); --ack-each: the
//   console acknowledges every chunk at once instead of batching like the web console.
//
// Processes: the real server (dist/server.js) and a real agent (dist/agent.js) are children;
// under load, a flooding console and a simulated fleet (heartbeating fake agents) run in their
// own child processes so their work lands on the server, not on the measuring client.
// The measurements are exported for bench/cluster.mjs (same-node vs cross-node terminals).
import { execFileSync, fork, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SERVER_JS = path.join(ROOT, 'dist', 'server.js');
const AGENT_JS = path.join(ROOT, 'dist', 'agent.js');
const ADMIN_PASSWORD = 'bench-admin-password';
const ENROLL = 'bench-enroll-token-0123456789';
const enc = new TextEncoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ---------------- frames (same codec as protocol/frames.ts) ---------------- */

function termFrame(id, data) {
  const idb = Buffer.from(id);
  return Buffer.concat([Buffer.from([1, idb.length]), idb, Buffer.from(data)]);
}
function parseTermFrame(buf) {
  const idLen = buf[1];
  return { id: buf.toString('utf8', 2, 2 + idLen), data: buf.subarray(2 + idLen) };
}

/* ---------------- stats ---------------- */

function pct(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
export function summary(samples) {
  const s = [...samples].sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p99: pct(s, 99), max: s[s.length - 1] };
}

/* ---------------- processes ---------------- */

/** Node flags for the server and agent (`--profile DIR` writes their CPU profiles there). */
let childNodeArgs = [];

async function startServer(dataDir, env = {}) {
  const proc = spawn(process.execPath, [...childNodeArgs, ...(process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean), SERVER_JS], {
    env: {
      ...process.env,
      MUSTER_PORT: '0',
      MUSTER_HOST: '127.0.0.1',
      MUSTER_DATA_DIR: dataDir,
      MUSTER_ADMIN_PASSWORD: ADMIN_PASSWORD,
      MUSTER_ENROLL_TOKEN: ENROLL,
      MUSTER_LOCAL_AGENT: '0',
      MUSTER_LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 30_000);
    proc.stdout.on('data', (d) => {
      if (out.length < 1e6) out += d.toString();
      const m = /"port":(\d+),"msg":"listening"/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    proc.stderr.on('data', (d) => {
      out += d.toString();
    });
    proc.once('exit', (code) => reject(new Error(`server exited ${code}:\n${out}`)));
  });
  proc.stdout.removeAllListeners('data');
  // BENCH_SERVER_STDOUT=FILE: the server's stdout from here on (its log, `--trace-gc` lines) to FILE.
  if (process.env.BENCH_SERVER_STDOUT) proc.stdout.pipe(fs.createWriteStream(process.env.BENCH_SERVER_STDOUT));
  else proc.stdout.resume();
  return { proc, port, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}` };
}

export function startAgent(wsUrl, stateDir) {
  return spawn(
    process.execPath,
    [
      ...childNodeArgs,
      AGENT_JS,
      '--server',
      wsUrl,
      '--token',
      ENROLL,
      '--state-dir',
      stateDir,
      '--health-port=-1',
      '--name',
      'bench-agent',
      '--log-level',
      'warn',
    ],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
}

async function login(url) {
  const r = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: ADMIN_PASSWORD }),
  });
  if (r.status !== 200) throw new Error(`login failed ${r.status}`);
  return r.headers.get('set-cookie').split(';')[0];
}

async function waitOnline(url, cookie, agentId) {
  for (let i = 0; i < 200; i++) {
    const r = await fetch(`${url}/api/agents/${agentId}`, { headers: { cookie } });
    if (r.status === 200 && (await r.json()).status === 'online') return;
    await sleep(100);
  }
  throw new Error('agent did not come online');
}

/** CPU seconds (user + system) a process has used so far. */
function cpuOf(pid) {
  const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rssOf(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) * 1024;
}

/* ---------------- headless console ---------------- */

/**
 * The web console's acknowledgements (web/src/features/terminals/sessions.ts, with the values of
 * protocol/flow-control.ts): bytes xterm.js has written are acknowledged in batches, at once when
 * they reach TERM_ACK_BYTES, else TERM_CONSOLE_ACK_DELAY_MS after the batch's first byte.
 * `--ack-each` acknowledges every chunk instead (what this bench did before: one more message per
 * keystroke echo than a browser sends).
 */
const TERM_ACK_BYTES = 16 * 1024;
const TERM_CONSOLE_ACK_DELAY_MS = 15;
export const consoleAcks = { each: false };

/**
 * A console socket with one terminal. `onData(chunk)` sees every output chunk; its bytes count
 * as written after a macrotask (xterm.js calls its write callback after parsing) and are
 * acknowledged as the web console does (above).
 */
export async function openConsole(srv, cookie, agentId, onData, opts = {}) {
  let ws = new WebSocket(`${srv.wsUrl}/ws/console`, { headers: { cookie, origin: srv.url }, perMessageDeflate: false });
  await new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  });
  if (opts.direct) {
    // Cluster: ask for the agent's node (term.elsewhere) and open the terminal on a socket there, as the web console does.
    const answer = await new Promise((resolve, reject) => {
      ws.on('message', (d, bin) => {
        if (bin) return;
        const m = JSON.parse(d.toString());
        if (m.ref !== 'b0') return;
        if (m.type === 'term.elsewhere' || m.type === 'term.opened') resolve(m);
        else if (m.type === 'error') reject(new Error(`${m.code}: ${m.message}`));
      });
      ws.send(JSON.stringify({ type: 'term.open', ref: 'b0', agentId, cols: 120, rows: 40, direct: true }));
    });
    if (answer.type !== 'term.elsewhere') throw new Error('the console node opened the terminal itself: its agent is not elsewhere (or no MUSTER_NODE_URL)');
    ws.close();
    const base = new URL(answer.url.startsWith('/') ? `${srv.url}${answer.url}` : answer.url);
    const wsUrl = `${base.protocol === 'https:' ? 'wss' : 'ws'}://${base.host}${base.pathname.replace(/\/$/, '')}/ws/console`;
    ws = new WebSocket(wsUrl, { headers: { cookie, origin: base.origin }, perMessageDeflate: false });
    await new Promise((res, rej) => {
      ws.once('open', res);
      ws.once('error', rej);
    });
  }
  let sessionId = null;
  let parsing = 0;
  let parseScheduled = false;
  let pendingAck = 0;
  let ackTimer = null;
  const flushAck = () => {
    clearTimeout(ackTimer);
    ackTimer = null;
    if (pendingAck > 0 && sessionId) ws.send(JSON.stringify({ type: 'term.ack', sessionId, bytes: pendingAck }));
    pendingAck = 0;
  };
  const written = () => {
    parseScheduled = false;
    pendingAck += parsing;
    parsing = 0;
    if (consoleAcks.each || pendingAck >= TERM_ACK_BYTES) flushAck();
    else ackTimer ??= setTimeout(flushAck, TERM_CONSOLE_ACK_DELAY_MS);
  };
  const opened = new Promise((resolve, reject) => {
    ws.on('message', (d, bin) => {
      if (bin) {
        const f = parseTermFrame(d);
        onData(f.data);
        parsing += f.data.length;
        if (!parseScheduled) {
          parseScheduled = true;
          setImmediate(written);
        }
        return;
      }
      const m = JSON.parse(d.toString());
      if (m.type === 'term.opened') {
        sessionId = m.sessionId;
        resolve();
      } else if (m.type === 'error' && m.ref === 'b1') reject(new Error(`${m.code}: ${m.message}`));
    });
  });
  ws.send(JSON.stringify({ type: 'term.open', ref: 'b1', agentId, cols: 120, rows: 40 }));
  await opened;
  return {
    ws,
    get sessionId() {
      return sessionId;
    },
    write: (s) => ws.send(termFrame(sessionId, typeof s === 'string' ? enc.encode(s) : s)),
    close: () => {
      clearTimeout(ackTimer);
      ws.send(JSON.stringify({ type: 'term.close', sessionId }));
      ws.close();
    },
  };
}

/**
 * Watches output for an ASCII marker. Searches the bytes as they come, without copying them: a
 * 50 MB `cat` decoded as UTF-8 (ICU's streaming decoder) cost this process about a third of its
 * CPU, and copies of each chunk into text or a growing buffer cost it 10-50 % more than reading;
 * on two cores the relay's three processes lacked what the measuring console spent. Direct and
 * relay runs use this same waiter. Between chunks the last 256 bytes stay, for a marker waited
 * for after it arrived.
 */
export function textWaiter() {
  const KEEP = 256;
  const EMPTY = Buffer.alloc(0);
  /** The output not yet consumed: `tail` (at most KEEP bytes, copied) followed by `chunk` (the newest, by reference). */
  let tail = EMPTY;
  let chunk = EMPTY;
  let waiters = [];
  /** Finds `needle` in tail+chunk at or after `from` (new bytes start there) and consumes through it. */
  const take = (needle, from) => {
    const n = needle.length;
    const joinFrom = Math.max(0, from - n + 1);
    if (joinFrom < tail.length) {
      // A match starting in the tail (it may run into the chunk's first bytes).
      const join = Buffer.concat([tail, chunk.subarray(0, n - 1)]);
      const i = join.indexOf(needle, joinFrom);
      if (i >= 0 && i < tail.length) {
        const end = i + n;
        if (end <= tail.length) tail = tail.subarray(end);
        else {
          chunk = chunk.subarray(end - tail.length);
          tail = EMPTY;
        }
        return true;
      }
    }
    const k = chunk.indexOf(needle, Math.max(0, joinFrom - tail.length));
    if (k < 0) return false;
    chunk = chunk.subarray(k + n);
    tail = EMPTY;
    return true;
  };
  return {
    push(data) {
      const from = tail.length;
      chunk = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      waiters = waiters.filter((w) => !w(from));
      tail = chunk.length >= KEEP ? Buffer.from(chunk.subarray(-KEEP)) : Buffer.concat([tail, chunk]).subarray(-KEEP);
      chunk = EMPTY;
    },
    until(marker, timeoutMs = 60_000) {
      const needle = Buffer.from(marker, 'latin1');
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${marker}`)), timeoutMs);
        const check = (from) => {
          if (!take(needle, from)) return false;
          clearTimeout(t);
          resolve();
          return true;
        };
        if (!check(0)) waiters.push(check);
      });
    },
    reset() {
      tail = EMPTY;
    },
  };
}

/* ---------------- measurements ---------------- */

const KEYS = 'abcdefghijklmnopqrstuvwxyz';
/** `--hops`: each relay keystroke's start (CLOCK_MONOTONIC ms, the hop tracer's clock) and round trip, per phase. */
let hopKeys = null;
let keyLog = null;
let hopClock = null;

/**
 * Keystroke round trip: one key, wait for its echo, next key. The terminal runs `cat` in
 * canonical mode, so the echo comes from the tty itself: what is measured is the transport.
 */
export async function keystrokes(write, waitEcho, n) {
  const samples = [];
  for (let i = 0; i < n; i++) {
    if (i % 200 === 199) {
      write('\x15'); // kill the line before the tty's line buffer fills
      await sleep(20);
    }
    const k = KEYS[i % KEYS.length];
    const t0 = performance.now();
    const echoed = waitEcho(k);
    write(k);
    await echoed;
    const ms = performance.now() - t0;
    samples.push(ms);
    keyLog?.push([hopClock() - ms, ms]);
    await sleep(1);
  }
  return summary(samples);
}

/** An echo waiter: resolves when a chunk containing `k` arrives. */
export function echoTracker() {
  let want = null;
  return {
    push(chunk) {
      if (want && chunk.includes(want.code)) {
        const w = want;
        want = null;
        w.resolve();
      }
    },
    wait(k) {
      return new Promise((resolve) => {
        want = { code: k.charCodeAt(0), resolve };
      });
    },
  };
}

export async function directKeystrokes(n) {
  const pty = require('node-pty');
  const p = pty.spawn('/bin/cat', [], {
    name: 'xterm-256color',
    cols: 120,
    rows: 40,
    cwd: os.tmpdir(),
    env: { PATH: process.env.PATH, TERM: 'xterm-256color' },
    encoding: null,
  });
  const e = echoTracker();
  p.onData((d) => e.push(d));
  await sleep(200);
  const r = await keystrokes(
    (s) => p.write(s),
    (k) => e.wait(k),
    n,
  );
  p.kill('SIGKILL');
  return r;
}

export async function directThroughput(file) {
  const pty = require('node-pty');
  const cpu0 = process.cpuUsage();
  const marker = 'BENCH_DIRECT_DONE';
  // The shell stays alive after the marker: node-pty drops unread output 200 ms after the child exits.
  const p = pty.spawn('/bin/sh', ['-c', `sleep 0.2; cat ${file}; echo ${marker.slice(0, 6)}""${marker.slice(6)}; sleep 60`], {
    name: 'xterm-256color',
    cols: 120,
    rows: 40,
    cwd: os.tmpdir(),
    env: { PATH: process.env.PATH, TERM: 'xterm-256color' },
    encoding: null,
  });
  const w = textWaiter();
  let bytes = 0;
  let t0 = 0;
  p.onData((d) => {
    if (!t0) t0 = performance.now();
    bytes += d.length;
    w.push(d);
  });
  let exited = null;
  p.onExit((e) => {
    exited = e;
  });
  await w.until(marker, 120_000).catch((err) => {
    throw new Error(`${err.message} (direct: ${bytes} bytes read, exit ${JSON.stringify(exited)})`);
  });
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  p.kill('SIGKILL');
  return { bytes, secs, mbps: bytes / secs / 1e6, cpuMsPerMB: (cpu.user + cpu.system) / 1000 / (bytes / 1e6) };
}

export async function relayThroughput(srv, agentPid, cookie, agentId, file, opts = {}) {
  const w = textWaiter();
  let bytes = 0;
  let t0 = 0;
  let counting = false;
  let frames = 0;
  const c = await openConsole(
    srv,
    cookie,
    agentId,
    (d) => {
      if (counting) {
        if (!t0) t0 = performance.now();
        bytes += d.length;
        frames++;
      }
      w.push(d);
    },
    opts,
  );
  c.write('stty -echo; echo READY""X\r');
  await w.until('READYX');
  await sleep(300);
  w.reset();
  const marker = 'BENCH_RELAY_DONE';
  counting = true;
  let peakRss = 0;
  const rssTimer = setInterval(() => {
    peakRss = Math.max(peakRss, rssOf(srv.proc.pid));
  }, 100);
  const cpu0 = { server: cpuOf(srv.proc.pid), agent: cpuOf(agentPid), client: process.cpuUsage() };
  c.write(`cat ${file}; echo ${marker.slice(0, 6)}""${marker.slice(6)}\r`);
  await w.until(marker, 180_000);
  clearInterval(rssTimer);
  const secs = (performance.now() - t0) / 1000;
  const clientCpu = process.cpuUsage(cpu0.client);
  const mb = bytes / 1e6;
  // CPU per MB does not depend on what else the machine runs: the relay's real cost.
  const cpuMsPerMB = {
    server: ((cpuOf(srv.proc.pid) - cpu0.server) * 1000) / mb,
    agent: ((cpuOf(agentPid) - cpu0.agent) * 1000) / mb,
    client: (clientCpu.user + clientCpu.system) / 1000 / mb,
  };
  c.close();
  return { bytes, secs, mbps: bytes / secs / 1e6, frames, avgFrame: Math.round(bytes / frames), peakServerRssMiB: peakRss / 1048576, cpuMsPerMB };
}

export async function relayKeystrokes(srv, cookie, agentId, n, agentPid, opts = {}) {
  const e = echoTracker();
  const w = textWaiter();
  const c = await openConsole(
    srv,
    cookie,
    agentId,
    (d) => {
      w.push(d);
      e.push(d);
    },
    opts,
  );
  c.write('echo READY""Y; exec cat\r');
  await w.until('READYY');
  await sleep(300);
  // CPU per keystroke round trip (key, echo, ack) of the server and the agent: unlike the
  // latencies, it does not depend on what else the machine runs (meaningful when idle: under
  // load the server's CPU also serves the flood and the fleet).
  const cpu0 = { server: cpuOf(srv.proc.pid), agent: agentPid ? cpuOf(agentPid) : 0, client: process.cpuUsage() };
  if (hopKeys) keyLog = [];
  const r = await keystrokes(
    (s) => c.write(s),
    (k) => e.wait(k),
    n,
  );
  const client = process.cpuUsage(cpu0.client);
  r.cpuUsPerKey = {
    server: ((cpuOf(srv.proc.pid) - cpu0.server) * 1e6) / n,
    agent: agentPid ? ((cpuOf(agentPid) - cpu0.agent) * 1e6) / n : NaN,
    client: (client.user + client.system) / n,
  };
  if (hopKeys) hopKeys[agentPid ? 'idle' : 'load'] = keyLog;
  keyLog = null;
  c.close();
  return r;
}

/** Ctrl-C during `cat /dev/urandom | base64`: time until the shell answers again (flood drained). */
async function relayInterrupt(srv, cookie, agentId, reps = 3) {
  const w = textWaiter();
  const c = await openConsole(srv, cookie, agentId, (d) => w.push(d));
  c.write('echo READY""Z\r');
  await w.until('READYZ');
  const samples = [];
  for (let i = 0; i < reps; i++) {
    c.write('cat /dev/urandom | base64\r');
    await sleep(1500);
    const t0 = performance.now();
    c.write('\x03');
    c.write(`echo INT""${i}\r`);
    await w.until(`INT${i}`, 30_000);
    samples.push(performance.now() - t0);
  }
  c.close();
  return summary(samples);
}

/** Floor of this machine: a console `ping` → `pong` round trip to the server (one hop, no agent). */
export async function consolePing(srv, cookie, n) {
  const ws = new WebSocket(`${srv.wsUrl}/ws/console`, { headers: { cookie, origin: srv.url }, perMessageDeflate: false });
  await new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  });
  let waiting = null;
  ws.on('message', (d, bin) => {
    if (!bin && waiting && JSON.parse(d.toString()).type === 'pong') {
      const w = waiting;
      waiting = null;
      w();
    }
  });
  const samples = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise((r) => {
      waiting = r;
      ws.send('{"type":"ping"}');
    });
    samples.push(performance.now() - t0);
    await sleep(1);
  }
  ws.close();
  return summary(samples);
}

/**
 * Interleaved direct/relay `cat` repetitions, median of each (other work on the machine hits both
 * alike); also the CPU per MB of every process, each repetition's and the median of them.
 */
async function throughputRuns(srv, agentPid, cookie, agentId, file, reps) {
  const directRuns = [];
  const relayRuns = [];
  for (let i = 0; i < reps; i++) {
    directRuns.push(await directThroughput(file));
    relayRuns.push(await relayThroughput(srv, agentPid, cookie, agentId, file));
  }
  const median = (runs) => [...runs].sort((a, b) => a.mbps - b.mbps)[Math.floor(runs.length / 2)];
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const direct = median(directRuns);
  const relay = median(relayRuns);
  return {
    direct,
    relay,
    ratio: relay.mbps / direct.mbps,
    runs: { direct: directRuns.map((r) => +r.mbps.toFixed(1)), relay: relayRuns.map((r) => +r.mbps.toFixed(1)) },
    cpuMsPerMBMedian: {
      reader: +med(directRuns.map((r) => r.cpuMsPerMB)).toFixed(2),
      agent: +med(relayRuns.map((r) => r.cpuMsPerMB.agent)).toFixed(2),
      server: +med(relayRuns.map((r) => r.cpuMsPerMB.server)).toFixed(2),
      client: +med(relayRuns.map((r) => r.cpuMsPerMB.client)).toFixed(2),
    },
  };
}

/* ---------------- load generators (child processes) ---------------- */

/** Child: a console flooding `cat /dev/urandom | base64` in its own session, acking like xterm.js. */
async function floodChild(srvUrl, wsUrl, cookie, agentId) {
  let bytes = 0;
  const c = await openConsole({ url: srvUrl, wsUrl }, cookie, agentId, (d) => {
    bytes += d.length;
  });
  c.write('cat /dev/urandom | base64\r');
  process.send({ ready: true });
  process.on('message', (m) => {
    if (m === 'stop') {
      c.write('\x03');
      setTimeout(() => {
        c.close();
        process.send({ bytes });
        setTimeout(() => process.exit(0), 100);
      }, 300);
    }
  });
}

/** Child: `n` fake agents enrolling and heartbeating every `hbMs` ms (the server's interval). */
async function fleetChild(wsUrl, n) {
  const { randomUUID } = await import('node:crypto');
  const metrics = {
    cpuPercent: 5,
    memUsedBytes: 1,
    memTotalBytes: 2,
    load: [0.1, 0.1, 0.1],
    diskUsedBytes: 1,
    diskTotalBytes: 2,
    uptimeSec: 1,
    runningExecutions: 0,
    openTerminals: 0,
  };
  let beats = 0;
  const socks = [];
  for (let i = 0; i < n; i++) {
    const agentId = randomUUID();
    const ws = new WebSocket(`${wsUrl}/ws/agent`, { headers: { 'X-Muster-Agent-Id': agentId, 'X-Muster-Enroll-Token': ENROLL }, perMessageDeflate: false });
    socks.push(ws);
    ws.on('open', () =>
      ws.send(
        JSON.stringify({
          type: 'hello',
          protocol: 1,
          agentVersion: '0.0.0-sim',
          agentId,
          name: `sim-${i}`,
          hostname: `sim-${i}`,
          ips: ['10.0.0.1'],
          externalIp: null,
          platform: 'linux',
          arch: 'x64',
          os: 'Sim',
          cpus: 1,
          memoryBytes: 1024,
          labels: { sim: '1' },
          capabilities: [],
          executions: [],
        }),
      ),
    );
    ws.on('message', (d, bin) => {
      if (bin) return;
      const m = JSON.parse(d.toString());
      if (m.type === 'welcome') {
        // Spread the beats over the interval, as a real fleet's are.
        setTimeout(() => {
          setInterval(() => {
            if (ws.readyState === 1) {
              ws.send(JSON.stringify({ type: 'heartbeat', metrics }));
              beats++;
            }
          }, m.heartbeatIntervalMs);
        }, Math.random() * m.heartbeatIntervalMs);
      }
    });
    ws.on('error', () => {});
    if (i % 50 === 49) await sleep(30);
  }
  process.send({ ready: true });
  process.on('message', (m) => {
    if (m === 'stop') {
      for (const ws of socks) ws.terminate();
      process.send({ beats });
      setTimeout(() => process.exit(0), 100);
    }
  });
}

function child(args) {
  const p = fork(fileURLToPath(import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = new Promise((r) => p.once('message', r));
  const stop = () =>
    new Promise((r) => {
      p.once('message', r);
      p.send('stop');
    });
  return { p, ready, stop };
}

/* ---------------- main ---------------- */

/** `--hops`: once the server and the agent have exited (and written their events), where each keystroke went. */
async function reportHops(dir, consoleEvents, results, json) {
  const { readHops, hopReport, formatHops, rows } = await import('./lib/hops-report.mjs');
  let ev = {};
  for (let i = 0; i < 50 && !(ev.server && ev.agent); i++) {
    await sleep(100);
    ev = readHops(dir, ['server', 'agent']);
  }
  if (!ev.server || !ev.agent) return console.error(`--hops: no events from the server or the agent in ${dir}`);
  ev.console = rows(consoleEvents);
  results.hops = {};
  for (const [phase, keys] of Object.entries(hopKeys)) {
    if (!keys?.length) continue;
    results.hops[phase] = hopReport(keys, ev);
    if (!json) console.log(`\n${formatHops(`keystroke hops, ${phase === 'idle' ? 'idle' : 'under load'}`, results.hops[phase])}`);
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      keys: { type: 'string', default: '1000' },
      mb: { type: 'string', default: '50' },
      fleet: { type: 'string', default: '1000' },
      'heartbeat-ms': { type: 'string', default: '1000' },
      json: { type: 'boolean', default: false },
      child: { type: 'string' },
      profile: { type: 'string' },
      reps: { type: 'string', default: '3' },
      only: { type: 'string' },
      'ack-each': { type: 'boolean', default: false },
      hops: { type: 'string' },
    },
    allowPositionals: true,
    strict: false,
  });
  // The flood child's console acknowledges like the measuring one.
  if (values['ack-each']) process.env.BENCH_ACK_EACH = '1';
  consoleAcks.each = process.env.BENCH_ACK_EACH === '1';
  if (values.child === 'flood') return floodChild(...process.argv.slice(-4));
  if (values.child === 'fleet') return fleetChild(process.argv[process.argv.length - 2], Number(process.argv[process.argv.length - 1]));

  if (!fs.existsSync(SERVER_JS) || !fs.existsSync(AGENT_JS))
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), '--no-web'], { stdio: 'inherit' });
  if (values.profile) childNodeArgs = ['--cpu-prof', `--cpu-prof-dir=${path.resolve(values.profile)}`];
  // --hops DIR: per-hop timestamps in the server, the agent and this console (bench/lib/hop-trace.mjs).
  let hopConsole = null;
  const hopsDir = values.hops ? path.resolve(values.hops) : null;
  if (hopsDir) {
    fs.mkdirSync(hopsDir, { recursive: true });
    for (const f of fs.readdirSync(hopsDir)) if (/^hops-.*\.json$/.test(f)) fs.rmSync(path.join(hopsDir, f));
    process.env.BENCH_HOPS_DIR = hopsDir;
    childNodeArgs.push('--import', pathToFileURL(path.join(ROOT, 'bench', 'lib', 'hop-trace.mjs')).href);
    const tracer = await import('./lib/hop-trace.mjs');
    hopConsole = tracer.install('console');
    hopClock = tracer.now;
    hopKeys = {};
  }
  const nKeys = Number(values.keys);
  const reps = Math.max(1, Number(values.reps));
  const mb = Number(values.mb);
  const fleetN = Number(values.fleet);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-bench-term-'));
  const file = path.join(tmp, 'payload.txt');
  // Printable payload (base64 lines), so the terminal only moves bytes.
  {
    const fd = fs.openSync(file, 'w');
    const { randomBytes } = await import('node:crypto');
    let written = 0;
    while (written < mb * 1e6) {
      const chunk = randomBytes(57 * 1000)
        .toString('base64')
        .replace(/(.{76})/g, '$1\n');
      fs.writeSync(fd, chunk);
      written += chunk.length;
    }
    fs.closeSync(fd);
  }
  const log = (...a) => {
    if (!values.json) console.log(...a);
  };
  // The ping floor sends --keys pings back to back: far above a console's control message rate
  // (MUSTER_CONSOLE_MESSAGE_RATE, 50/s), which would cut the measuring socket. Keystrokes are
  // binary frames and are not counted; the fleet enrolls from one address.
  const srv = await startServer(path.join(tmp, 'data'), {
    MUSTER_HEARTBEAT_INTERVAL_MS: values['heartbeat-ms'],
    MUSTER_TERMINAL_RECORDING: process.env.MUSTER_TERMINAL_RECORDING ?? '1',
    MUSTER_CONSOLE_MESSAGE_RATE: '100000',
    MUSTER_CONSOLE_MESSAGE_BURST: '100000',
    MUSTER_ANON_CONNECT_RATE: '100000',
    MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '100000',
  });
  const agent = startAgent(srv.wsUrl, path.join(tmp, 'agent'));
  const results = { loadavgBefore: os.loadavg().map((x) => +x.toFixed(2)), cpus: os.cpus().length };
  try {
    const cookie = await login(srv.url);
    let agentId = '';
    for (let i = 0; i < 100 && !agentId; i++) {
      try {
        agentId = fs.readFileSync(path.join(tmp, 'agent', 'agent-id'), 'utf8').trim();
      } catch {
        await sleep(50);
      }
    }
    await waitOnline(srv.url, cookie, agentId);
    log(`server pid ${srv.proc.pid}, agent ${agentId}; payload ${(fs.statSync(file).size / 1e6).toFixed(1)} MB`);

    if (!values.only || values.only === 'idle') {
      results.keystrokeIdle = {
        direct: await directKeystrokes(nKeys),
        relay: await relayKeystrokes(srv, cookie, agentId, nKeys, agent.pid),
        ping: await consolePing(srv, cookie, nKeys),
      };
      log('keystroke idle (ms):', JSON.stringify(results.keystrokeIdle));
    }
    // --only idle: the idle keystrokes alone (profiling the relay path per keystroke);
    // --only load: the keystrokes under load alone; --only throughput: the cat repetitions alone
    // (profiling the relay path per MB).
    if (values.only === 'throughput') results.throughput = await throughputRuns(srv, agent.pid, cookie, agentId, file, reps);
    else if (!values.only || values.only === 'load') {
      const fleet = child(['--child', 'fleet', srv.wsUrl, String(fleetN)]);
      await fleet.ready;
      await sleep(2000);
      const flood = child(['--child', 'flood', srv.url, srv.wsUrl, cookie, agentId]);
      await flood.ready;
      await sleep(1000);
      const rssBefore = rssOf(srv.proc.pid);
      results.keystrokeLoad = {
        direct: await directKeystrokes(nKeys),
        relay: await relayKeystrokes(srv, cookie, agentId, nKeys),
        ping: await consolePing(srv, cookie, nKeys),
      };
      const rssAfter = rssOf(srv.proc.pid);
      const floodRes = await flood.stop();
      const fleetRes = await fleet.stop();
      results.load = {
        fleetAgents: fleetN,
        heartbeatMs: Number(values['heartbeat-ms']),
        heartbeats: fleetRes.beats,
        floodBytes: floodRes.bytes,
        serverRssMiB: [rssBefore / 1048576, rssAfter / 1048576],
      };
      log('keystroke under load (ms):', JSON.stringify(results.keystrokeLoad), JSON.stringify(results.load));
    }
    if (!values.only) {
      await sleep(1000);

      results.interrupt = await relayInterrupt(srv, cookie, agentId);
      log('Ctrl-C during a flood → prompt (ms):', JSON.stringify(results.interrupt));

      results.throughput = await throughputRuns(srv, agent.pid, cookie, agentId, file, reps);
    }
    if (results.throughput) log('throughput:', JSON.stringify(results.throughput));
  } finally {
    agent.kill('SIGTERM');
    srv.proc.kill('SIGTERM');
    await sleep(300);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  results.loadavgAfter = os.loadavg().map((x) => +x.toFixed(2));
  if (hopsDir) await reportHops(hopsDir, hopConsole.snapshot(), results, values.json);
  if (values.json) console.log(JSON.stringify(results));
  else if (values.only === 'throughput') {
    const t = results.throughput;
    const c = t.cpuMsPerMBMedian;
    console.log(
      `load ${results.loadavgBefore[0]} → ${results.loadavgAfter[0]}; ${t.runs.direct.join('/')} vs ${t.runs.relay.join('/')} MB/s (${(t.ratio * 100).toFixed(0)} %); CPU per MB (median of ${reps}): reader ${c.reader} ms, agent ${c.agent} + server ${c.server} + client ${c.client} ms; relay frames ${t.relay.frames} (avg ${t.relay.avgFrame} B)`,
    );
  } else if (values.only === 'idle') {
    const c = results.keystrokeIdle.relay.cpuUsPerKey;
    console.log(
      `load ${results.loadavgBefore[0]} → ${results.loadavgAfter[0]}; CPU per keystroke: server ${c.server.toFixed(0)} µs, agent ${c.agent.toFixed(0)} µs, client ${c.client.toFixed(0)} µs`,
    );
  } else if (values.only === 'load') {
    const l = results.keystrokeLoad;
    const f = (x) => x.toFixed(2);
    console.log(
      `load ${results.loadavgBefore[0]} → ${results.loadavgAfter[0]}; keystroke p50 / p99 under load: direct ${f(l.direct.p50)} / ${f(l.direct.p99)} ms, relay ${f(l.relay.p50)} / ${f(l.relay.p99)} ms; console ping ${f(l.ping.p50)} / ${f(l.ping.p99)} ms`,
    );
  } else {
    const f = (x) => x.toFixed(2);
    const k = results.keystrokeIdle;
    const l = results.keystrokeLoad;
    const t = results.throughput;
    console.log(`\n${results.cpus} CPUs; load average ${results.loadavgBefore[0]} before, ${results.loadavgAfter[0]} after`);
    console.log('\n| measurement | node-pty direct | through the relay | target |');
    console.log('|---|---|---|---|');
    console.log(`| keystroke p50 idle | ${f(k.direct.p50)} ms | ${f(k.relay.p50)} ms | |`);
    console.log(`| keystroke p99 idle | ${f(k.direct.p99)} ms | ${f(k.relay.p99)} ms | < 3 ms |`);
    console.log(`| keystroke p50 under load | ${f(l.direct.p50)} ms | ${f(l.relay.p50)} ms | |`);
    console.log(`| keystroke p99 under load | ${f(l.direct.p99)} ms | ${f(l.relay.p99)} ms | < 8 ms |`);
    const ck = k.relay.cpuUsPerKey;
    console.log(
      `| CPU per keystroke round trip, idle (key, echo, ack) | | server ${ck.server.toFixed(0)} + agent ${ck.agent.toFixed(0)} µs (client ${ck.client.toFixed(0)} µs) | |`,
    );
    console.log(`| console ping→pong p50 / p99 idle (one hop, no agent: this machine's floor) | | ${f(k.ping.p50)} / ${f(k.ping.p99)} ms | |`);
    console.log(`| console ping→pong p50 / p99 under load | | ${f(l.ping.p50)} / ${f(l.ping.p99)} ms | |`);
    console.log(`| ${mb} MB cat throughput | ${f(t.direct.mbps)} MB/s | ${f(t.relay.mbps)} MB/s (${(t.ratio * 100).toFixed(0)}%) | ≥ 70% of direct |`);
    console.log(`| Ctrl-C in a flood until the shell answers (max of ${results.interrupt.n}) | | ${f(results.interrupt.max)} ms | < 1 s |`);
    console.log(`| (runs, MB/s) | ${t.runs.direct.join(', ')} | ${t.runs.relay.join(', ')} | |`);
    console.log(`| server peak RSS during cat | | ${f(t.relay.peakServerRssMiB)} MiB | bounded |`);
    const c = t.relay.cpuMsPerMB;
    console.log(`| CPU per MB of output | reader ${f(t.direct.cpuMsPerMB)} ms | agent ${f(c.agent)} + server ${f(c.server)} + client ${f(c.client)} ms | |`);
  }
}

// Run as a script (not when bench/cluster.mjs imports the measurements above).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
