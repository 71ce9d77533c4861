// Process helpers for benchmarks: start the real server (or any node script) with the open-file
// limit raised, read CPU and RSS of a pid from /proc.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SERVER_JS = path.join(ROOT, 'dist', 'server.js');
const CLK_TCK = 100; // USER_HZ on Linux

/** utime+stime of `pid` in seconds. */
export function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Resident set size of `pid` in bytes. */
export function rssBytes(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Hard open-file limit of this process (what a child may raise its soft limit to). */
export function nofileHardLimit() {
  const m = /^Max open files\s+\d+\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return m ? Number(m[1]) : 1024;
}

/** Samples CPU of `pid` over `ms`: percent of one core. */
export async function cpuPercentOver(pid, ms) {
  const c0 = cpuSeconds(pid),
    t0 = process.hrtime.bigint();
  await sleep(ms);
  const c1 = cpuSeconds(pid),
    t1 = process.hrtime.bigint();
  return (100 * (c1 - c0)) / (Number(t1 - t0) / 1e9);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Spawns `node script` with the soft open-file limit raised to the hard one. Resolves when a stdout
 * line matches `ready` (returns the match); rejects if the process exits first.
 */
export function spawnNode(script, { env = {}, args = [], nodeArgs = [], ready, timeoutMs = 60_000, quiet = true } = {}) {
  const child = spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', process.execPath, ...nodeArgs, script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const onData = (d) => {
    out += d.toString();
    if (out.length > 1e6) out = out.slice(-5e5);
    if (!quiet) process.stderr.write(d);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const started = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${path.basename(script)} not ready in ${timeoutMs} ms:\n${out.slice(-3000)}`)), timeoutMs);
    const check = () => {
      const m = ready.exec(out);
      if (m) {
        clearTimeout(t);
        child.stdout.off('data', check);
        resolve(m);
      }
    };
    child.stdout.on('data', check);
    void exited.then(({ code, signal }) => {
      clearTimeout(t);
      reject(new Error(`${path.basename(script)} exited (${code ?? signal}):\n${out.slice(-3000)}`));
    });
  });
  return {
    child,
    exited,
    started,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Starts dist/server.js; resolves with { proc, port, url, wsUrl }. */
/** A TCP port free right now (for a server whose own address must be in its environment). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function startMusterServer({ dataDir, port = 0, env = {}, nodeArgs = [] }) {
  const proc = spawnNode(SERVER_JS, {
    env: {
      MUSTER_PORT: String(port),
      MUSTER_HOST: '0.0.0.0',
      MUSTER_DATA_DIR: dataDir,
      MUSTER_LOCAL_AGENT: '0',
      // BENCH_LOG_LEVEL=info shows the shutdown's own timings (`shutdown complete`) in BENCH_VERBOSE output.
      MUSTER_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      MUSTER_ADMIN_PASSWORD: 'bench-password-123',
      MUSTER_ENROLL_TOKEN: 'bench-enroll-token-0123456789',
      // The simulated fleet enrolls thousands of agents from a few local addresses at once: the
      // anonymous (enrollment) buckets are a defence, not what these benchmarks measure.
      MUSTER_ANON_CONNECT_RATE: '100000',
      MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '100000',
      ...env,
    },
    // e.g. BENCH_SERVER_NODE_ARGS='--cpu-prof --cpu-prof-dir=bench/out/prof' profiles the server.
    nodeArgs: [...(process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean), ...nodeArgs],
    // main.ts prints the console URL on stdout once listening (logs are at warn level here).
    ready: /Muster is running: http:\/\/[^:]+:(\d+)/,
  });
  const m = await proc.started;
  const p = Number(m[1]);
  return { ...proc, port: p, pid: proc.child.pid, url: `http://127.0.0.1:${p}`, wsUrl: `ws://127.0.0.1:${p}`, enrollToken: 'bench-enroll-token-0123456789' };
}

/** Fetches and parses a Prometheus endpoint into name{labels} → value. */
export async function scrape(url) {
  const text = await (await fetch(url)).text();
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
