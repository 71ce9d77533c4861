// Where a keystroke's round trip went (bench/terminal.mjs `--hops DIR`): the events of
// bench/lib/hop-trace.mjs in the console (the bench), the server and the agent, matched key by key.
import fs from 'node:fs';
import path from 'node:path';
import { READ, WRITE, FS_WRITE, GC } from './hop-trace.mjs';

/** The hops of one keystroke, in order; each segment ends where the next begins. */
export const SEGMENTS = [
  ['console', 'console: key handed to the socket'],
  ['wake', 'console → server (loopback, wake-up)'],
  ['server', 'server: key read → written to the agent'],
  ['wake', 'server → agent'],
  ['agent', 'agent: key read → written to the PTY'],
  ['kernel', 'PTY echo (tty line discipline, kernel workers)'],
  ['agent', 'agent: echo read → written'],
  ['wake', 'agent → server'],
  ['server', 'server: echo read → written to the console'],
  ['wake', 'server → console'],
  ['console', 'console: echo read → seen by the bench'],
];

const swap = (id) => (id % 65536) * 65536 + Math.floor(id / 65536);

/** Events of one process as rows [t, kind, id, n], in time order. */
export function rows(flat) {
  const out = [];
  for (let i = 0; i < flat.length; i += 4) out.push([flat[i], flat[i + 1], flat[i + 2], flat[i + 3]]);
  return out.sort((a, b) => a[0] - b[0]);
}

/** The first event at or after `from` (and not after `to`) that matches. */
function first(ev, from, to, pred) {
  let lo = 0;
  let hi = ev.length;
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (ev[m][0] < from) lo = m + 1;
    else hi = m;
  }
  for (let i = lo; i < ev.length && ev[i][0] <= to; i++) if (pred(ev[i])) return ev[i];
  return null;
}

/** Reads DIR/hops-<role>-*.json (written when the server and the agent exit). */
export function readHops(dir, roles) {
  const out = {};
  for (const role of roles) {
    const f = fs.readdirSync(dir).find((x) => x.startsWith(`hops-${role}-`));
    if (f) out[role] = rows(JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')).events);
  }
  return out;
}

const pct = (xs, p) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

/**
 * keys: [[t0, ms]] (t0 on the same clock as the events); ev: { console, server, agent } rows.
 * Returns per-segment p50/p99, the round trip without the kernel's echo (the relay's own share:
 * node-pty direct pays the echo too), the slowest keys' segments and the GC pauses in the window.
 */
export function hopReport(keys, ev) {
  const { console: C, server: S, agent: A } = ev;
  const t0 = keys[0][0];
  const tEnd = keys[keys.length - 1][0] + keys[keys.length - 1][1];
  const aTcp = first(A, t0, tEnd, (e) => e[1] === READ && e[2] > 0);
  if (!aTcp) return null;
  const aSock = aTcp[2];
  const sAgent = swap(aSock);
  const traced = [];
  for (const [k0, d] of keys) {
    const k1 = k0 + d + 0.05;
    const cw = first(C, k0 - 0.05, k1, (e) => e[1] === WRITE && e[2] > 0);
    if (!cw) continue;
    const cs = cw[2];
    const sc = swap(cs);
    const p = [k0, cw[0]];
    let at = cw[0];
    const steps = [
      [S, (e) => e[1] === READ && e[2] === sc],
      [S, (e) => e[1] === WRITE && e[2] === sAgent],
      [A, (e) => e[1] === READ && e[2] === aSock],
      [A, (e) => e[1] === FS_WRITE && e[2] < 0],
      [A, (e, prev) => e[1] === READ && e[2] === prev[2]],
      [A, (e) => e[1] === WRITE && e[2] === aSock],
      [S, (e) => e[1] === READ && e[2] === sAgent],
      [S, (e) => e[1] === WRITE && e[2] === sc],
      [C, (e) => e[1] === READ && e[2] === cs],
    ];
    let prev = cw;
    for (const [evs, pred] of steps) {
      const back = evs === C ? 0 : 0.05; // clocks agree; a read is stamped before the writer's return
      const e = first(evs, at - back, k1 + 0.1, (x) => pred(x, prev));
      if (!e) break;
      p.push(e[0]);
      at = e[0];
      prev = e;
    }
    if (p.length < SEGMENTS.length) continue;
    p.push(k0 + d);
    traced.push({ ms: d, at: k0, seg: p.slice(1).map((x, i) => x - p[i]) });
  }
  const segs = SEGMENTS.map(([, name], i) => ({
    name,
    p50: pct(
      traced.map((k) => k.seg[i]),
      50,
    ),
    p99: pct(
      traced.map((k) => k.seg[i]),
      99,
    ),
  }));
  const own = traced.map((k) => k.ms - k.seg[5]);
  const gcs = {};
  for (const [role, evs] of Object.entries(ev)) {
    const g = evs.filter((e) => e[1] === GC && e[0] >= t0 && e[0] <= tEnd);
    // perf_hooks kinds: 1 minor (scavenge), 4 major (mark-compact), 8 incremental marking, 16 weak callbacks.
    const kinds = {};
    for (const e of g) kinds[e[2]] = (kinds[e[2]] ?? 0) + 1;
    gcs[role] = { n: g.length, kinds, maxMs: g.reduce((m, e) => Math.max(m, e[3]), 0), totalMs: g.reduce((s, e) => s + e[3], 0) };
  }
  // Which part of the path the slowest 1 % spent most in, and what overlapped it.
  const slowest = [...traced].sort((a, b) => b.ms - a.ms).slice(0, Math.max(10, Math.ceil(traced.length / 100)));
  const worst = {};
  for (const k of slowest) {
    const i = k.seg.indexOf(Math.max(...k.seg));
    const kind = SEGMENTS[i][0];
    worst[kind] = (worst[kind] ?? 0) + 1;
    k.gc = Object.entries(ev)
      .flatMap(([role, evs]) => evs.filter((e) => e[1] === GC && e[0] < k.at + k.ms && e[0] + e[3] > k.at).map((e) => `${role} ${e[3].toFixed(1)} ms`))
      .join(', ');
  }
  return {
    keys: keys.length,
    traced: traced.length,
    segments: segs,
    ownShare: { p50: pct(own, 50), p99: pct(own, 99) },
    gcs,
    slowestBy: worst,
    slowest: slowest.slice(0, 10).map((k) => ({ ms: +k.ms.toFixed(2), seg: k.seg.map((x) => +x.toFixed(2)), gc: k.gc })),
  };
}

/** The report as text. */
export function formatHops(title, r) {
  if (!r) return `${title}: no hop events (was the build traced?)`;
  const f = (x) => x.toFixed(3);
  const lines = [`${title}: ${r.traced} of ${r.keys} keystrokes traced end to end`, '| segment | p50 ms | p99 ms |', '|---|---|---|'];
  for (const s of r.segments) lines.push(`| ${s.name} | ${f(s.p50)} | ${f(s.p99)} |`);
  lines.push(`| round trip without the PTY echo (the relay's own share) | ${f(r.ownShare.p50)} | ${f(r.ownShare.p99)} |`);
  lines.push(
    `slowest 1 %: longest segment ${JSON.stringify(r.slowestBy)}; GC pauses in the window ${JSON.stringify(r.gcs, (k, v) => (typeof v === 'number' ? +v.toFixed(1) : v))}`,
  );
  for (const k of r.slowest) lines.push(`  ${k.ms} ms: ${k.seg.join(' / ')}${k.gc ? ` (GC: ${k.gc})` : ''}`);
  return lines.join('\n');
}
