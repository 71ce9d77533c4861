// Console benchmark: the built console (web/dist) served by the real server (dist/server.js), driven
// in headless Chromium, with a fleet of --agents (default 100,000) on one node.
//
// Fleet: one server process cannot hold 100,000 sockets (the open-files limit is 20,000 per
// process), so by default (--mode seeded) the bench writes the agent rows into the server's SQLite
// database and starts the server with MUSTER_BENCH_SIMULATED_PRESENCE (bench only, off by default):
// every seeded agent is online with simulated heartbeats every 5 s (metrics drifting, through the
// ordinary presence flush and bus events) and --flips agents per second change status. With
// --mode sockets, --agents real WebSocket agents (bench/sim/console-agents.mjs) are used instead
// (up to ~15,000 here).
//
//  1. Time until the agents view is usable: navigation → first row painted with the whole fleet
//     counted ("N of N agents"), cold and warm, median of --runs.
//  2. Frame time while live updates stream in, idle and while the table scrolls every frame.
//  3. Filter by selector: server answer time of fleet.open (a Node console socket, median of 5 per
//     selector), and in the page (typing → count shown, including the input's 200 ms debounce).
//  4. Browser heap (CDP, after a GC) and what the socket carried.
//
//   npm run bench -- console [--agents 100000] [--mode seeded|sockets] [--flips 20] [--runs 5] [--seconds 10] [--windows 3] [--profile] [--no-write]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import Database from 'better-sqlite3';
import WebSocket from 'ws';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: flags } = parseArgs({
  options: {
    agents: { type: 'string', default: '100000' },
    mode: { type: 'string', default: 'seeded' },
    flips: { type: 'string', default: '20' },
    runs: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '10' },
    windows: { type: 'string', default: '3' },
    'no-write': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
  },
  allowPositionals: true,
});
const N = Number(flags.agents);
const SEEDED = flags.mode !== 'sockets';
const FLIPS = Number(flags.flips);
const RUNS = Number(flags.runs);
const SECONDS = Number(flags.seconds);
const WINDOWS = Math.max(1, Number(flags.windows));
const CHROMIUM = process.env.MUSTER_CHROMIUM ?? '/usr/bin/chromium';
const PASSWORD = 'bench-admin-password';
const TOKEN = 'bench-enroll-token-0123456789';
const log = (...a) => process.stdout.write(`${a.join(' ')}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

if (!fs.existsSync(CHROMIUM)) {
  log(`console bench: Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  process.exit(process.env.CI === 'true' ? 1 : 0);
}
if (!fs.existsSync(path.join(ROOT, 'web', 'dist', 'index.html'))) {
  log('console bench: the console is not built (node scripts/build.mjs)');
  process.exit(1);
}

const children = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
process.on('SIGINT', () => process.exit(130));

async function startServer(dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-bench-console-')), extraEnv = {}) {
  const proc = spawn(process.execPath, [path.join(ROOT, 'dist', 'server.js')], {
    env: {
      ...process.env,
      MUSTER_PORT: '0',
      MUSTER_HOST: '127.0.0.1',
      MUSTER_DATA_DIR: dataDir,
      MUSTER_ADMIN_PASSWORD: PASSWORD,
      MUSTER_ENROLL_TOKEN: TOKEN,
      MUSTER_LOCAL_AGENT: '0',
      MUSTER_LOG_LEVEL: 'warn',
      MUSTER_AGENT_CONNECT_RATE: '100000',
      MUSTER_ANON_CONNECT_RATE: '100000',
      MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '100000',
      MUSTER_LOGIN_RATE_LIMIT: '1000',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  proc.stderr.on('data', (d) => {
    out += d;
  });
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 240_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /"port":(\d+),"msg":"listening"|Muster is running: http:\/\/[^:]+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1] ?? m[2]));
      }
    });
    proc.once('exit', (c) => {
      clearTimeout(t);
      reject(new Error(`server exited ${c}:\n${out}`));
    });
  });
  return { proc, port, url: `http://127.0.0.1:${port}`, dataDir };
}

async function login(url) {
  const r = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: PASSWORD }),
  });
  if (!r.ok) throw new Error(`login failed: ${r.status}`);
  return r.headers.get('set-cookie').split(';')[0];
}

const ROLES = ['web', 'db', 'cache', 'queue', 'batch'];
const ENVS = ['prod', 'staging', 'dev'];
const VERSIONS = ['0.1.0', '0.1.0', '0.1.0', '0.0.9'];
/** Writes N agent rows (the same shapes the socket simulator reports) into a migrated SQLite database. */
function seed(dataDir) {
  const db = new Database(path.join(dataDir, 'muster.db'));
  const ins =
    db.prepare(`INSERT INTO agents (id, name, hostname, ips, external_ip, platform, arch, os, version, cpus, memory_bytes, labels, label_overrides, groups, secret_hash, created_at, connected_at, last_seen_at, revoked_at)
    VALUES (?, ?, ?, ?, NULL, 'linux', ?, 'Debian GNU/Linux 12 (bookworm)', ?, 4, ?, ?, NULL, '[]', ?, ?, NULL, ?, NULL)`);
  const now = Date.now();
  db.transaction(() => {
    for (let i = 0; i < N; i++) {
      ins.run(
        `seed-${String(i).padStart(6, '0')}`,
        `sim-${String(i).padStart(6, '0')}`,
        `host-${i}.sim.example`,
        JSON.stringify([`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`]),
        i % 10 === 0 ? 'arm64' : 'x64',
        VERSIONS[i % VERSIONS.length],
        8 * 2 ** 30,
        JSON.stringify({ role: ROLES[i % ROLES.length], env: ENVS[i % ENVS.length], rack: `r${i % 40}` }),
        '0'.repeat(64),
        now,
        now,
      );
    }
  })();
  db.close();
}

let server;
let sim = null;
const t0 = Date.now();
if (SEEDED) {
  // Start once so the migrations create the schema, seed the rows, start again with simulated presence.
  const first = await startServer();
  first.proc.kill('SIGTERM');
  await new Promise((r) => first.proc.once('exit', r));
  seed(first.dataDir);
  log(`seeded ${N} agent rows in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  server = await startServer(first.dataDir, { MUSTER_BENCH_SIMULATED_PRESENCE: String(FLIPS) });
} else {
  server = await startServer();
  log(`server on ${server.url}; starting ${N} simulated agents`);
  sim = spawn(process.execPath, [path.join(ROOT, 'bench', 'sim', 'console-agents.mjs'), `ws://127.0.0.1:${server.port}`, TOKEN, String(N)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(sim);
  await new Promise((resolve, reject) => {
    sim.stdout.on('data', (d) => {
      if (String(d).includes('ready')) resolve();
    });
    sim.once('exit', (c) => reject(new Error(`simulated fleet exited ${c}`)));
  });
}
const cookie = await login(server.url);
for (;;) {
  const s = await (await fetch(`${server.url}/api/agents/summary`, { headers: { cookie } })).json();
  if ((s.byStatus?.online ?? 0) >= N * (SEEDED ? 0.95 : 1)) break;
  await sleep(200);
}
log(`${N} agents online after ${((Date.now() - t0) / 1000).toFixed(1)} s (${SEEDED ? 'seeded rows, simulated presence' : 'real sockets'})`);
// Let the heartbeats spread over their interval before measuring.
await sleep(6000);

/** Server CPU (user+system seconds) of the server process, from /proc. */
function serverCpuSec() {
  try {
    const f = fs.readFileSync(`/proc/${server.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Server answer time of fleet.open for a selector, from a Node console socket (ms, median of `n`). */
async function filterTimes(selector, extra = {}, n = 5) {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/ws/console`, { headers: { cookie, origin: server.url }, perMessageDeflate: false });
  const waiters = new Map();
  let matching = 0;
  ws.on('message', (d) => {
    const m = JSON.parse(String(d));
    if ((m.type === 'fleet.window' || m.type === 'error') && m.ref && waiters.has(m.ref)) {
      if (m.type === 'fleet.window') matching = m.matching;
      waiters.get(m.ref)(m);
    }
  });
  await new Promise((r, j) => {
    ws.once('open', r);
    ws.once('error', j);
  });
  ws.send(JSON.stringify({ type: 'fleet.feed', metrics: false }));
  // Baseline: the server's CPU rate with the fleet alone (presence, flushes), to subtract below.
  const b0 = serverCpuSec();
  const bt = performance.now();
  await sleep(1000);
  const baseRate = (serverCpuSec() - b0) / ((performance.now() - bt) / 1000);
  const c0 = serverCpuSec();
  const w0 = performance.now();
  const times = [];
  for (let i = 0; i < n; i++) {
    const ref = `f${i}`;
    const t = performance.now();
    const done = new Promise((r) => waiters.set(ref, r));
    ws.send(JSON.stringify({ type: 'fleet.open', ref, view: 'bench', selector, offset: 0, limit: 120, ...extra }));
    await done;
    times.push(performance.now() - t);
  }
  const wall = (performance.now() - w0) / 1000;
  const cpuMs = Math.max(0, ((serverCpuSec() - c0 - baseRate * wall) * 1000) / n);
  ws.close();
  return { ms: median(times), max: Math.max(...times), matching, cpuMs };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-dev-shm-usage'],
});
const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const [name, value] = cookie.split('=');
await ctx.addCookies([{ name, value, url: server.url }]);
const page = await ctx.newPage();
let metricsPushes = 0;
let metricsBytes = 0;
let windowMsgs = 0;
let windowBytes = 0;
page.on('websocket', (ws) =>
  ws.on('framereceived', (f) => {
    if (typeof f.payload !== 'string') return;
    if (f.payload.startsWith('{"type":"agent.metrics"')) {
      metricsPushes++;
      metricsBytes += f.payload.length;
    } else if (f.payload.startsWith('{"type":"fleet.window"')) {
      windowMsgs++;
      windowBytes += f.payload.length;
    }
  }),
);

const readyText = `${N} of ${N} agents`;
/** Navigates to /agents and returns ms (navigation start → table row painted with all agents loaded). */
async function timeToUsable() {
  const wall = Date.now();
  await page.goto(`${server.url}/agents`, { waitUntil: 'commit' });
  await page.waitForFunction(
    (t) => {
      const c = document.querySelector('[data-test=agents-count]');
      return c && c.textContent.trim() === t && document.querySelector('[data-agent-id]');
    },
    readyText,
    { timeout: 60_000, polling: 'raf' },
  );
  // One more frame: the row is painted, not just in the DOM.
  const inPage = await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(performance.now()))));
  // Where the time went: the app's scripts ready (DOMContentLoaded); no fleet list is fetched.
  const parts = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const lists = performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/agents?'));
    const mark = (n) => performance.getEntriesByName(n, 'mark')[0]?.startTime ?? NaN;
    const assets = performance.getEntriesByType('resource').filter((e) => e.name.includes('/assets/'));
    return {
      dcl: nav ? nav.domContentLoadedEventEnd : 0,
      listBytes: lists.reduce((n, e) => n + e.encodedBodySize, 0),
      // The app's marks (web/src/features/agents/view.ts): the view's first fleet.open sent, and answered.
      open: mark('muster:fleet-open'),
      answer: mark('muster:fleet-window'),
      assetBytes: assets.reduce((n, e) => n + e.transferSize, 0),
    };
  });
  return { inPage, wall: Date.now() - wall, ...parts };
}

const loads = [];
for (let i = 0; i < RUNS; i++) {
  if (i === 0) await ctx.clearCookies().then(() => ctx.addCookies([{ name, value, url: server.url }]));
  loads.push(await timeToUsable());
  const l = loads.at(-1);
  log(
    `  agents view usable in ${l.inPage.toFixed(0)} ms (navigation → first row with all ${N} counted); DOMContentLoaded ${l.dcl.toFixed(0)} ms, fleet.open sent ${l.open.toFixed(0)} ms, answered ${l.answer.toFixed(0)} ms; assets transferred ${(l.assetBytes / 1e3).toFixed(0)} kB, agent lists fetched ${(l.listBytes / 1e3).toFixed(1)} kB`,
  );
}
const firstLoad = loads[0].inPage;
const warm = loads.slice(1).map((l) => l.inPage);

/** Samples rAF frame deltas for `seconds`; `scroll` scrolls the table's virtual list every frame. */
const perf = await page.context().newCDPSession(page);
await perf.send('Performance.enable');
const perfMetrics = async () => Object.fromEntries((await perf.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
async function frames(scroll) {
  metricsPushes = 0;
  metricsBytes = 0;
  windowMsgs = 0;
  windowBytes = 0;
  const cpu0 = serverCpuSec();
  const w0 = performance.now();
  const before = await perfMetrics();
  const r = await page.evaluate(
    async ({ seconds, scroll }) => {
      const longTasks = [];
      const po = new PerformanceObserver((l) => {
        for (const e of l.getEntries()) longTasks.push(e.duration);
      });
      try {
        po.observe({ type: 'longtask', buffered: false });
      } catch {
        /* not supported */
      }
      const table = document.querySelector('[data-test=agents-table]');
      const scroller = [table, ...table.querySelectorAll('*')].find(
        (e) => e.scrollHeight > e.clientHeight + 1000 && getComputedStyle(e).overflowY !== 'visible',
      );
      const deltas = [];
      let dir = 1;
      let last = performance.now();
      const end = last + seconds * 1000;
      let rowsSeen = new Set();
      let pendingFrames = 0;
      await new Promise((resolve) => {
        const tick = (t) => {
          deltas.push(t - last);
          last = t;
          if (scroll && scroller) {
            // About a screenful every 8 frames, bouncing between the ends of the 10,000 rows.
            scroller.scrollTop += dir * 120;
            if (scroller.scrollTop + scroller.clientHeight >= scroller.scrollHeight - 2) dir = -1;
            if (scroller.scrollTop <= 0) dir = 1;
            const row = document.querySelector('[data-agent-id]');
            if (row) rowsSeen.add(row.getAttribute('data-agent-id'));
            if (document.querySelector('[data-test=agent-row-pending]')) pendingFrames++;
          }
          if (t < end) requestAnimationFrame(tick);
          else resolve();
        };
        requestAnimationFrame(tick);
      });
      po.disconnect();
      return { deltas: deltas.slice(1), longTasks, scroller: Boolean(scroller), distinctTopRows: rowsSeen.size, pendingFrames };
    },
    { seconds: SECONDS, scroll },
  );
  const after = await perfMetrics();
  const d = r.deltas;
  const total = d.reduce((a, b) => a + b, 0);
  // Main-thread work (CPU time the renderer spent, not wall time): robust to a busy machine.
  const work = (k) => ((after[k] - before[k]) * 1000) / d.length;
  return {
    taskMs: work('TaskDuration'),
    scriptMs: work('ScriptDuration'),
    layoutMs: work('LayoutDuration'),
    styleMs: work('RecalcStyleDuration'),
    frames: d.length,
    fps: (d.length / total) * 1000,
    p50: pct(d, 50),
    p95: pct(d, 95),
    p99: pct(d, 99),
    max: Math.max(...d),
    over17: d.filter((x) => x > 17.5).length / d.length,
    over33: d.filter((x) => x > 34).length / d.length,
    longTasks: r.longTasks.length,
    longTaskMax: r.longTasks.length ? Math.max(...r.longTasks) : 0,
    pushes: metricsPushes,
    pushMB: metricsBytes / 1e6,
    scroller: r.scroller,
    distinctTopRows: r.distinctTopRows,
    pendingShare: r.pendingFrames / d.length,
    windows: windowMsgs,
    windowKB: windowBytes / 1e3,
    serverCpu: (serverCpuSec() - cpu0) / ((performance.now() - w0) / 1000),
  };
}

const loadBefore = os.loadavg()[0];
const idle = await frames(false);
let cdp = null;
if (flags.profile) {
  cdp = await page.context().newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.start');
}
// Several scrolling windows: the machine is shared, so report the median window and the range.
const scrollRuns = [];
for (let i = 0; i < WINDOWS; i++) scrollRuns.push(await frames(true));
const byFps = [...scrollRuns].sort((a, b) => a.fps - b.fps);
const scrolling = byFps[Math.floor(byFps.length / 2)];
const fpsRange = `${byFps[0].fps.toFixed(1)}–${byFps.at(-1).fps.toFixed(1)}`;
if (cdp) {
  // Top functions by self time while scrolling (bench/out/console-scroll.cpuprofile for DevTools).
  const { profile } = await cdp.send('Profiler.stop');
  fs.mkdirSync(path.join(ROOT, 'bench', 'out'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench', 'out', 'console-scroll.cpuprofile'), JSON.stringify(profile));
  const dt = new Map();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (let i = 0; i < profile.samples.length; i++) {
    const n = byId.get(profile.samples[i]);
    const key = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`;
    dt.set(key, (dt.get(key) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  }
  for (const [k, v] of [...dt].sort((a, b) => b[1] - a[1]).slice(0, 25)) log(`  ${v.toFixed(0).padStart(6)} ms  ${k}`);
}
const fmt = (f) =>
  `main-thread work per frame ${f.taskMs.toFixed(1)} ms (script ${f.scriptMs.toFixed(1)}, layout ${f.layoutMs.toFixed(1)}, style ${f.styleMs.toFixed(1)}); ${f.fps.toFixed(1)} fps, frame p50 ${f.p50.toFixed(1)} ms / p95 ${f.p95.toFixed(1)} ms / p99 ${f.p99.toFixed(1)} ms / max ${f.max.toFixed(0)} ms, ${(f.over17 * 100).toFixed(1)}% frames > 16.7 ms, ${f.longTasks} long tasks (max ${f.longTaskMax.toFixed(0)} ms), ${f.pushes} metrics pushes (${f.pushMB.toFixed(1)} MB), ${f.windows} fleet.window messages (${f.windowKB.toFixed(0)} kB), frames with rows still loading ${(f.pendingShare * 100).toFixed(1)}%, server CPU ${(f.serverCpu * 100).toFixed(0)}% of a core`;
log(`idle, heartbeats streaming: ${fmt(idle)}`);
log(
  `scrolling, heartbeats streaming: ${fmt(scrolling)}${scrolling.scroller ? '' : ' (NO SCROLLER FOUND)'}; ${scrolling.distinctTopRows} distinct top rows seen`,
);
const loadAfter = os.loadavg()[0];

// Filter by selector: the server's answer (fleet.open → fleet.window), then in the page.
const selectors = [
  ['labels.role == "db"', {}],
  ['hostname ~ "host-1*" and labels.env != "prod"', {}],
  ['labels.rack == "r7"', { status: 'online', sort: 'cpu', desc: true }],
  ['', { sort: 'hostname', desc: true }],
];
const filters = [];
for (const [sel, extra] of selectors) {
  const f = await filterTimes(sel, extra);
  filters.push({ sel, extra, ...f });
  log(
    `  filter ${JSON.stringify(sel)} ${JSON.stringify(extra)}: server answer ${f.ms.toFixed(0)} ms (max ${f.max.toFixed(0)}), server CPU ≈ ${f.cpuMs.toFixed(0)} ms per answer, ${f.matching} matching`,
  );
}
const expectDb = (await filterTimes('labels.role == "db"', {}, 1)).matching;
await page.evaluate(() => {
  document.querySelector('[data-test=agents-table]').scrollTop = 0;
});
const tf = performance.now();
await page.fill('[data-test=selector-input]', 'labels.role == "db"');
await page.waitForFunction(
  (t) => document.querySelector('[data-test=agents-count]')?.textContent.trim() === t && document.querySelector('[data-agent-id]'),
  `${expectDb} of ${N} agents`,
  { timeout: 30_000, polling: 'raf' },
);
const inPageFilter = performance.now() - tf;
log(`  filter in the page (typing → ${expectDb} rows counted and shown, including the 200 ms input debounce): ${inPageFilter.toFixed(0)} ms`);

await perf.send('HeapProfiler.enable');
await perf.send('HeapProfiler.collectGarbage');
const { usedSize: heap } = await perf.send('Runtime.getHeapUsage');
log(`  browser JS heap after the runs (after a GC): ${(heap / 2 ** 20).toFixed(1)} MiB`);
const serverRss = (() => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${server.proc.pid}/status`, 'utf8'))[1]) * 1024;
  } catch {
    return NaN;
  }
})();
await browser.close();

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const fleetDesc = SEEDED
  ? `${N.toLocaleString('en')} agents seeded as database rows and shown online with simulated presence
(\`MUSTER_BENCH_SIMULATED_PRESENCE=${FLIPS}\`, bench only, off by default: in-memory heartbeats every 5 s through the
ordinary presence flush and bus events, ${FLIPS} agents a second flipping offline/online). One server process
cannot hold 100,000 sockets (20,000 open files per process here), so the fleet is **seeded, not real sockets**`
  : `${N.toLocaleString('en')} real WebSocket agents (bench/sim/console-agents.mjs) heartbeating every 5 s`;
const section = `## Console

\`npm run bench -- console\` (bench/console.mjs): the built console served by the real server (SQLite, one
node), ${fleetDesc}; headless Chromium (Debian) at 1400×900 on this machine (${os.cpus().length} × ${cpu}; server,
fleet and browser share it with the other sessions' builds and tests: load average ${loadBefore.toFixed(1)} → ${loadAfter.toFixed(1)} during the
frame windows, so wall-clock figures are pessimistic; main-thread work per frame is the steadier figure).
Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC.

The agents view follows a server-side fleet view (protocol/README.md, "Fleet views"): the page never
loads the fleet; it gets its window (about 140 rows around the screen) plus counts, then deltas for
what it shows, batched every 50 ms on the server.

| measure | result | target |
|---|---|---|
| agents view usable, first load (navigation → first row painted with all ${N.toLocaleString('en')} counted) | ${firstLoad.toFixed(0)} ms (DOMContentLoaded ${loads[0].dcl.toFixed(0)} ms, fleet.open sent at ${loads[0].open.toFixed(0)} ms, answered at ${loads[0].answer.toFixed(0)} ms; ${(loads[0].assetBytes / 1e3).toFixed(0)} kB of assets transferred) | < 1 s |
| same, warm (assets cached), median of ${warm.length} | ${warm.length ? median(warm).toFixed(0) : '–'} ms | < 1 s |
| agent lists fetched by the page over REST during a load | ${(loads[0].listBytes / 1e3).toFixed(1)} kB (was 7 MB for 10,000 agents) | |
| frame rate with live updates, idle | ${idle.fps.toFixed(1)} fps (p50 ${idle.p50.toFixed(1)} ms, p99 ${idle.p99.toFixed(1)} ms, max ${idle.max.toFixed(0)} ms) | 60 fps |
| frame rate with live updates while the table scrolls 120 px every frame (median of ${WINDOWS} windows; range ${fpsRange} fps) | ${scrolling.fps.toFixed(1)} fps (p50 ${scrolling.p50.toFixed(1)} ms, p95 ${scrolling.p95.toFixed(1)} ms, p99 ${scrolling.p99.toFixed(1)} ms, max ${scrolling.max.toFixed(0)} ms) | 60 fps |
| main-thread work per frame, idle / scrolling (CDP TaskDuration; script, layout, style) | ${idle.taskMs.toFixed(1)} ms / ${scrolling.taskMs.toFixed(1)} ms (script ${scrolling.scriptMs.toFixed(1)}, layout ${scrolling.layoutMs.toFixed(1)}, style ${scrolling.styleMs.toFixed(1)}) | < 16.7 ms |
| frames over 16.7 ms (idle / scrolling) | ${(idle.over17 * 100).toFixed(1)}% / ${(scrolling.over17 * 100).toFixed(1)}% | |
| scrolling frames that showed placeholder rows (window not yet received) | ${(scrolling.pendingShare * 100).toFixed(1)}% | |
| \`fleet.window\` messages per ${SECONDS} s window (idle / scrolling) | ${idle.windows} (${idle.windowKB.toFixed(0)} kB) / ${scrolling.windows} (${scrolling.windowKB.toFixed(0)} kB); \`agent.metrics\` pushes ${idle.pushes + scrolling.pushes} | |
| filter by selector, server answer (fleet.open → fleet.window, median of 5; in brackets the server CPU time per answer, which does not depend on the load) | ${filters.map((f) => `\`${f.sel || '(none)'}\`${Object.keys(f.extra).length ? ` ${JSON.stringify(f.extra)}` : ''}: ${f.ms.toFixed(0)} ms [${f.cpuMs.toFixed(0)} ms CPU] (${f.matching.toLocaleString('en')} matching)`).join('; ')} | < 300 ms |
| filter in the page (typing → rows shown, includes the input's 200 ms debounce) | ${inPageFilter.toFixed(0)} ms | |
| browser JS heap after the runs (CDP, after a GC) | ${(heap / 2 ** 20).toFixed(1)} MiB | < 100 MB |
| server CPU during the idle / scrolling windows (whole process: presence, flushes, views) | ${(idle.serverCpu * 100).toFixed(0)}% / ${(scrolling.serverCpu * 100).toFixed(0)}% of a core; RSS ${(serverRss / 2 ** 20).toFixed(0)} MiB | |

How: "usable" is navigation start to the first animation frame after the table shows its first row
with the whole fleet counted ("N of N agents", from the server's counts). Frame deltas are sampled
with requestAnimationFrame inside the page; scrolling moves the table's scroll container by 120 px
every frame, bouncing between the ends of the list. The filter's server answer is timed from a Node
console socket on the same machine. \`--profile\` writes a CPU profile of the scrolling window to bench/out/.
`;
log('');
log(section);
if (!flags['no-write']) {
  const file = path.join(ROOT, 'bench', 'RESULTS.md');
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmark results\n';
  const re = /## Console\n[\s\S]*?(?=\n## |$)/;
  text = re.test(text) ? text.replace(re, section.trimEnd() + '\n') : `${text.trimEnd()}\n\n${section}`;
  fs.writeFileSync(file, text);
  log(`wrote ${path.relative(ROOT, file)}`);
}
sim?.kill('SIGKILL');
server.proc.kill('SIGTERM');
process.exit(0);
