// Console benchmark: the built console (web/dist) served by the real server (dist/server.js) with
// 10,000 simulated agents heartbeating (bench/sim/console-agents.mjs), driven in headless Chromium.
//
//  1. Time until the agents view is usable: from navigation to the first table row painted with
//     the whole fleet loaded ("N of N agents"), cold and warm (cached assets), median of --runs.
//  2. Frame time while heartbeats stream in: requestAnimationFrame deltas sampled in the page for
//     --seconds while idle, and while the virtual-scrolled table is scrolled every frame; plus the
//     long tasks (> 50 ms) the browser reports and how many agent.metrics pushes arrived meanwhile.
//
//   npm run bench -- console [--agents 10000] [--runs 5] [--seconds 10] [--windows 3] [--profile] [--no-write]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: flags } = parseArgs({
  options: {
    agents: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '10' },
    windows: { type: 'string', default: '3' },
    'no-write': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
  },
  allowPositionals: true,
});
const N = Number(flags.agents);
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
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });
process.on('SIGINT', () => process.exit(130));

async function startServer() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-bench-console-'));
  const proc = spawn(process.execPath, [path.join(ROOT, 'dist', 'server.js')], {
    env: {
      ...process.env, MUSTER_PORT: '0', MUSTER_HOST: '127.0.0.1', MUSTER_DATA_DIR: dataDir, MUSTER_ADMIN_PASSWORD: PASSWORD,
      MUSTER_ENROLL_TOKEN: TOKEN, MUSTER_LOCAL_AGENT: '0', MUSTER_LOG_LEVEL: 'warn', MUSTER_AGENT_CONNECT_RATE: '100000', MUSTER_ANON_CONNECT_RATE: '100000', MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '100000',
      MUSTER_LOGIN_RATE_LIMIT: '1000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  proc.stderr.on('data', (d) => { out += d; });
  const port = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 30_000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /"port":(\d+),"msg":"listening"|Muster is running: http:\/\/[^:]+:(\d+)/.exec(out);
      if (m) { clearTimeout(t); resolve(Number(m[1] ?? m[2])); }
    });
    proc.once('exit', (c) => { clearTimeout(t); reject(new Error(`server exited ${c}:\n${out}`)); });
  });
  return { proc, port, url: `http://127.0.0.1:${port}`, dataDir };
}

async function login(url) {
  const r = await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'admin', password: PASSWORD }) });
  if (!r.ok) throw new Error(`login failed: ${r.status}`);
  return r.headers.get('set-cookie').split(';')[0];
}

const server = await startServer();
log(`server on ${server.url}; starting ${N} simulated agents`);
const t0 = Date.now();
const sim = spawn(process.execPath, [path.join(ROOT, 'bench', 'sim', 'console-agents.mjs'), `ws://127.0.0.1:${server.port}`, TOKEN, String(N)], { stdio: ['ignore', 'pipe', 'inherit'] });
children.push(sim);
await new Promise((resolve, reject) => {
  sim.stdout.on('data', (d) => { if (String(d).includes('ready')) resolve(); });
  sim.once('exit', (c) => reject(new Error(`simulated fleet exited ${c}`)));
});
const cookie = await login(server.url);
for (;;) {
  const s = await (await fetch(`${server.url}/api/agents/summary`, { headers: { cookie } })).json();
  if ((s.byStatus?.online ?? 0) >= N) break;
  await sleep(200);
}
log(`${N} agents online after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
// Let the heartbeats spread over their interval before measuring.
await sleep(6000);

const browser = await chromium.launch({
  executablePath: CHROMIUM, headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-dev-shm-usage'],
});
const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const [name, value] = cookie.split('=');
await ctx.addCookies([{ name, value, url: server.url }]);
const page = await ctx.newPage();
let metricsPushes = 0;
let metricsBytes = 0;
page.on('websocket', (ws) => ws.on('framereceived', (f) => {
  if (typeof f.payload === 'string' && f.payload.startsWith('{"type":"agent.metrics"')) {
    metricsPushes++;
    metricsBytes += f.payload.length;
  }
}));

const readyText = `${N} of ${N} agents`;
/** Navigates to /agents and returns ms (navigation start → table row painted with all agents loaded). */
async function timeToUsable() {
  const wall = Date.now();
  await page.goto(`${server.url}/agents`, { waitUntil: 'commit' });
  await page.waitForFunction((t) => {
    const c = document.querySelector('[data-test=agents-count]');
    return c && c.textContent.trim() === t && document.querySelector('[data-agent-id]');
  }, readyText, { timeout: 60_000, polling: 'raf' });
  // One more frame: the row is painted, not just in the DOM.
  const inPage = await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(performance.now()))));
  // Where the time went: the app's scripts ready (DOMContentLoaded) and the fleet list request.
  const parts = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const list = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/agents?limit='));
    return { dcl: nav ? nav.domContentLoadedEventEnd : 0, listStart: list ? list.startTime : 0, listEnd: list ? list.responseEnd : 0, listBytes: list ? list.encodedBodySize : 0 };
  });
  return { inPage, wall: Date.now() - wall, ...parts };
}

const loads = [];
for (let i = 0; i < RUNS; i++) {
  if (i === 0) await ctx.clearCookies().then(() => ctx.addCookies([{ name, value, url: server.url }]));
  loads.push(await timeToUsable());
  const l = loads.at(-1);
  log(`  agents view usable in ${l.inPage.toFixed(0)} ms (navigation → first row with all ${N} loaded); DOMContentLoaded ${l.dcl.toFixed(0)} ms, GET /api/agents ${l.listStart.toFixed(0)}–${l.listEnd.toFixed(0)} ms (${(l.listBytes / 1e6).toFixed(1)} MB)`);
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
  const before = await perfMetrics();
  const r = await page.evaluate(async ({ seconds, scroll }) => {
    const longTasks = [];
    const po = new PerformanceObserver((l) => { for (const e of l.getEntries()) longTasks.push(e.duration); });
    try { po.observe({ type: 'longtask', buffered: false }); } catch { /* not supported */ }
    const table = document.querySelector('[data-test=agents-table]');
    const scroller = [table, ...table.querySelectorAll('*')].find((e) => e.scrollHeight > e.clientHeight + 1000 && getComputedStyle(e).overflowY !== 'visible');
    const deltas = [];
    let dir = 1;
    let last = performance.now();
    const end = last + seconds * 1000;
    let rowsSeen = new Set();
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
        }
        if (t < end) requestAnimationFrame(tick);
        else resolve();
      };
      requestAnimationFrame(tick);
    });
    po.disconnect();
    return { deltas: deltas.slice(1), longTasks, scroller: Boolean(scroller), distinctTopRows: rowsSeen.size };
  }, { seconds: SECONDS, scroll });
  const after = await perfMetrics();
  const d = r.deltas;
  const total = d.reduce((a, b) => a + b, 0);
  // Main-thread work (CPU time the renderer spent, not wall time): robust to a busy machine.
  const work = (k) => ((after[k] - before[k]) * 1000) / d.length;
  return {
    taskMs: work('TaskDuration'), scriptMs: work('ScriptDuration'), layoutMs: work('LayoutDuration'), styleMs: work('RecalcStyleDuration'),
    frames: d.length, fps: (d.length / total) * 1000, p50: pct(d, 50), p95: pct(d, 95), p99: pct(d, 99), max: Math.max(...d),
    over17: d.filter((x) => x > 17.5).length / d.length, over33: d.filter((x) => x > 34).length / d.length,
    longTasks: r.longTasks.length, longTaskMax: r.longTasks.length ? Math.max(...r.longTasks) : 0,
    pushes: metricsPushes, pushMB: metricsBytes / 1e6, scroller: r.scroller, distinctTopRows: r.distinctTopRows,
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
const fmt = (f) => `main-thread work per frame ${f.taskMs.toFixed(1)} ms (script ${f.scriptMs.toFixed(1)}, layout ${f.layoutMs.toFixed(1)}, style ${f.styleMs.toFixed(1)}); ${f.fps.toFixed(1)} fps, frame p50 ${f.p50.toFixed(1)} ms / p95 ${f.p95.toFixed(1)} ms / p99 ${f.p99.toFixed(1)} ms / max ${f.max.toFixed(0)} ms, ${(f.over17 * 100).toFixed(1)}% frames > 16.7 ms, ${f.longTasks} long tasks (max ${f.longTaskMax.toFixed(0)} ms), ${f.pushes} metrics pushes (${f.pushMB.toFixed(1)} MB)`;
log(`idle, heartbeats streaming: ${fmt(idle)}`);
log(`scrolling, heartbeats streaming: ${fmt(scrolling)}${scrolling.scroller ? '' : ' (NO SCROLLER FOUND)'}; ${scrolling.distinctTopRows} distinct top rows seen`);
const loadAfter = os.loadavg()[0];
const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? null);
await browser.close();

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const section = `## Console

\`npm run bench -- console\` (bench/console.mjs): the built console served by the real server
(SQLite), ${N.toLocaleString('en')} simulated agents (bench/sim/console-agents.mjs) heartbeating every 5 s,
the server pushing \`agent.metrics\` batches every 2 s; headless Chromium ${'(Debian)'} at 1400×900 on
this machine (${os.cpus().length} × ${cpu}; server, simulated fleet and browser share it, and the
other sessions' builds and tests ran meanwhile: load average ${loadBefore.toFixed(1)} → ${loadAfter.toFixed(1)} during the
frame windows). Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC. Wall-clock frame
rates on a loaded 2-CPU machine are pessimistic; the main-thread work per frame is the steadier figure.

| measure | result | target |
|---|---|---|
| agents view usable, first load (navigation → first row painted with all ${N.toLocaleString('en')} loaded) | ${firstLoad.toFixed(0)} ms | < 1 s |
| of which (first load): scripts loaded (DOMContentLoaded) · fleet list request (prefetched with the page) start → end (size) | ${loads[0].dcl.toFixed(0)} ms · ${loads[0].listStart.toFixed(0)} → ${loads[0].listEnd.toFixed(0)} ms (${(loads[0].listBytes / 1e6).toFixed(1)} MB) | |
| same, warm (assets cached), median of ${warm.length} | ${warm.length ? median(warm).toFixed(0) : '–'} ms | < 1 s |
| frame rate while heartbeats stream, idle | ${idle.fps.toFixed(1)} fps (p50 ${idle.p50.toFixed(1)} ms, p99 ${idle.p99.toFixed(1)} ms, max ${idle.max.toFixed(0)} ms) | 60 fps |
| frame rate while heartbeats stream and the table scrolls every frame (median of ${WINDOWS} windows; range ${fpsRange} fps) | ${scrolling.fps.toFixed(1)} fps (p50 ${scrolling.p50.toFixed(1)} ms, p95 ${scrolling.p95.toFixed(1)} ms, p99 ${scrolling.p99.toFixed(1)} ms, max ${scrolling.max.toFixed(0)} ms) | 60 fps |
| main-thread work per frame, idle / scrolling (CDP TaskDuration; script, layout, style) | ${idle.taskMs.toFixed(1)} ms / ${scrolling.taskMs.toFixed(1)} ms (script ${scrolling.scriptMs.toFixed(1)}, layout ${scrolling.layoutMs.toFixed(1)}, style ${scrolling.styleMs.toFixed(1)}) | < 16.7 ms |
| frames over 16.7 ms (idle / scrolling) | ${(idle.over17 * 100).toFixed(1)}% / ${(scrolling.over17 * 100).toFixed(1)}% | |
| long tasks > 50 ms in the ${SECONDS} s windows (idle / scrolling) | ${idle.longTasks} (max ${idle.longTaskMax.toFixed(0)} ms) / ${scrolling.longTasks} (max ${scrolling.longTaskMax.toFixed(0)} ms) | |
| \`agent.metrics\` pushes received per window (idle / scrolling) | ${idle.pushes} (${idle.pushMB.toFixed(1)} MB) / ${scrolling.pushes} (${scrolling.pushMB.toFixed(1)} MB) | |
| JS heap after the runs | ${heap ? `${(heap / 2 ** 20).toFixed(0)} MiB` : 'n/a'} | |

How: "usable" is navigation start to the first animation frame after the table shows its first
row with the whole fleet counted. The console fetches the fleet as the page starts (a first
picture) and again once its socket is ready (the list live events apply to). Frame deltas are
sampled with requestAnimationFrame inside the page; scrolling moves the
virtual list's scroll container by 120 px every frame (bouncing between the ends). Live updates
are applied to a plain Map and published once per animation frame (never one render per
heartbeat); the agents table (web/src/features/agents/AgentTable.vue) keeps only the visible window
of fixed-height rows in the DOM with contained layout. With Naive UI's data table (virtual scroll)
in its place, the same scroll window cost 133 ms of main-thread work per frame (layout 6.5 ms, style
4.1 ms) against 21 ms (layout 1.8 ms, style 0.9 ms) for this table, measured back to back at load
average ~15; that is why the fleet table is purpose-built while the smaller tables use Naive UI.
\`--profile\` writes a CPU profile of the scrolling window to bench/out/.
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
sim.kill('SIGKILL');
server.proc.kill('SIGTERM');
process.exit(0);
