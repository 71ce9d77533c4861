// Per-hop timestamps for bench/terminal.mjs `--hops DIR`: preloaded (`node --import`) into the
// server and the agent, and imported by the bench itself. Every socket read (a chunk pushed to a
// net.Socket or tty.ReadStream), socket write (net.Socket _write/_writev) and synchronous fs write
// (the agent writes keystrokes to the PTY master with fs.writeSync) is stamped with
// CLOCK_MONOTONIC (process.hrtime's clock, the same in every process), so a keystroke can be followed
// console → server → agent → PTY → agent → server → console. GC pauses (perf_hooks 'gc') are
// stamped the same way. Events go to a preallocated Float64Array (no allocation per event, so the
// tracer adds no GC work of its own); the process writes DIR/hops-<role>-<pid>.json on exit.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';

const DIR = process.env.BENCH_HOPS_DIR;
/** Events kept (4 numbers each); later ones are dropped. */
const CAPACITY = 1 << 18;
const ev = new Float64Array(CAPACITY * 4);
let n = 0;
/** CLOCK_MONOTONIC in ms: performance.now() (no allocation) plus this process's hrtime origin. */
const origin = Number(process.hrtime.bigint()) / 1e6 - performance.now();
export const now = () => origin + performance.now();
/** Event kinds. */
export const READ = 0;
export const WRITE = 1;
export const FS_WRITE = 2;
export const GC = 3;

function rec(kind, id, a) {
  if (n >= CAPACITY) return;
  const i = n++ * 4;
  ev[i] = now();
  ev[i + 1] = kind;
  ev[i + 2] = id;
  ev[i + 3] = a;
}

const ID = Symbol('hopId');
/** A socket's id: TCP local port × 65536 + remote port; a TTY or pipe: −(fd + 1); 0 unknown. */
function idOf(s) {
  let id = s[ID];
  if (id !== undefined) return id;
  const h = s._handle;
  if (s.remotePort) id = s.localPort * 65536 + s.remotePort;
  else if (h && h.constructor && h.constructor.name === 'TCP')
    return 0; // not connected yet
  else id = h && h.fd >= 0 ? -(h.fd + 1) : 0;
  if (id !== 0) s[ID] = id;
  return id;
}

export function install(role) {
  const push = net.Socket.prototype.push;
  net.Socket.prototype.push = function (chunk, encoding) {
    if (chunk) rec(READ, idOf(this), chunk.length);
    return push.call(this, chunk, encoding);
  };
  const write = net.Socket.prototype._write;
  net.Socket.prototype._write = function (data, encoding, cb) {
    rec(WRITE, idOf(this), data.length);
    return write.call(this, data, encoding, cb);
  };
  const writev = net.Socket.prototype._writev;
  net.Socket.prototype._writev = function (chunks, cb) {
    let bytes = 0;
    for (const c of chunks) bytes += c.chunk.length;
    rec(WRITE, idOf(this), bytes);
    return writev.call(this, chunks, cb);
  };
  const writeSync = fs.writeSync;
  fs.writeSync = function (fd, ...rest) {
    rec(FS_WRITE, -(fd + 1), 0);
    return writeSync.call(this, fd, ...rest);
  };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (n >= CAPACITY) return;
      const i = n++ * 4;
      ev[i] = origin + e.startTime;
      ev[i + 1] = GC;
      ev[i + 2] = e.detail ? e.detail.kind : 0;
      ev[i + 3] = e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  const dump = () => {
    try {
      fs.writeFileSync(path.join(DIR, `hops-${role}-${process.pid}.json`), JSON.stringify({ role, events: Array.from(ev.subarray(0, n * 4)) }));
    } catch {
      /* the bench reports the role as missing */
    }
  };
  process.on('exit', dump);
  return { snapshot: () => Array.from(ev.subarray(0, n * 4)) };
}

/** The server and the agent install it when preloaded; the bench calls `install('console')`. */
const main = process.argv[1] ? path.basename(process.argv[1]) : '';
const preloadedRole = DIR && main === 'server.js' ? 'server' : DIR && main === 'agent.js' ? 'agent' : null;
if (preloadedRole) install(preloadedRole);
