// Remote execution benchmark, against the real server (dist/server.js) and the simulated fleet.
//
//  1. Dispatch: a trivial script on 10,000 agents; time from `POST /api/tasks` until every result is
//     stored (polled in the database itself), repeated --runs times; p50/p99. SQLite and MariaDB.
//     With MariaDB on this machine, its server process's CPU per run is reported too.
//  2. Ingest: 1,000 agents each streaming 1 MB at once; server ingest rate (stored bytes / time until
//     every result is stored) and server RSS growth (peak RSS during the run minus RSS before it).
//
//   npm run bench -- exec [--only dispatch|ingest] [--agents 10000] [--runs 20] [--script-kb 0] [--flood-agents 1000] [--flood-mb 1] [--db sqlite,mysql] [--no-write] [--profile]
//
// --script-kb: the dispatched script is `echo ok` padded with a comment to this many KiB (0: just
// `echo ok`), for the cost of sending a large script to every agent.
//
// --profile: a CPU profile of the server over the measured runs only (through its inspector, so the
// fleet's connect is not in it), written next to the results and summarized on stdout.
//
// Results are added to bench/RESULTS.md as a dated subsection of "## Exec" (earlier ones are kept).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import knexFactory from 'knex';
import { EXEC_RESPONDER, startFleet } from './sim/fleet.mjs';
import { summarizeProfile } from './lib/cpuprofile.mjs';
import { inspectorProfiler } from './lib/inspector-profile.mjs';
import { cpuSeconds, ROOT, rssBytes, sleep, startMusterServer } from './lib/proc.mjs';

const { values: flags } = parseArgs({
  options: {
    agents: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '20' },
    'script-kb': { type: 'string', default: '0' },
    'flood-agents': { type: 'string', default: '1000' },
    'flood-mb': { type: 'string', default: '1' },
    db: { type: 'string', default: 'sqlite,mysql' },
    'no-write': { type: 'boolean', default: false },
    only: { type: 'string', default: '' },
    profile: { type: 'boolean', default: false },
  },
});
const N = Number(flags.agents);
const RUNS = Number(flags.runs);
const SCRIPT_KB = Number(flags['script-kb']);
if (!Number.isInteger(SCRIPT_KB) || SCRIPT_KB < 0) throw new Error(`--script-kb: a whole number of KiB, not ${flags['script-kb']}`);
const SCRIPT = SCRIPT_KB ? `echo ok\n# ${'x'.repeat(SCRIPT_KB * 1024 - 11)}\n` : 'echo ok';
const FLOOD_N = Number(flags['flood-agents']);
const FLOOD_BYTES = Number(flags['flood-mb']) * 1_000_000;
const FLOOD = path.join(ROOT, 'bench', 'sim', 'exec-flood.mjs');
const MYSQL = { host: '127.0.0.1', port: 3306, user: 'root', password: '' };

/** The local MariaDB/MySQL server's process (its CPU is counted per run when it is readable here), or null. */
const dbPid = (() => {
  for (const p of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (/^(mariadbd|mysqld)$/.test(fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim())) return Number(p);
    } catch {
      /* gone, or not ours to read */
    }
  }
  return null;
})();
const dbCpu = (kind) => {
  if (kind !== 'mysql' || dbPid == null) return NaN;
  try {
    return cpuSeconds(dbPid);
  } catch {
    return NaN;
  }
};

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = path.join(ROOT, 'bench', 'out', `exec-${stamp}`);
fs.mkdirSync(outDir, { recursive: true });
const log = (...a) => process.stdout.write(`${a.join(' ')}\n`);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

/** A database for one server: its URL, a knex handle to poll it, and a drop function. */
async function database(kind, dataDir) {
  if (kind === 'sqlite') {
    const file = path.join(dataDir, 'muster.db');
    let k = null;
    return {
      url: `sqlite:${file}`,
      db: () => (k ??= knexFactory({ client: 'better-sqlite3', connection: { filename: file, readonly: true }, useNullAsDefault: true })),
      drop: async () => {
        await k?.destroy();
      },
    };
  }
  const name = `muster_bench_${process.pid}_${Math.random().toString(36).slice(2, 7)}`;
  const admin = knexFactory({ client: 'mysql2', connection: MYSQL });
  await admin.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  await admin.destroy();
  const k = knexFactory({ client: 'mysql2', connection: { ...MYSQL, database: name }, pool: { min: 1, max: 2 } });
  return {
    url: `mysql://root:@127.0.0.1:3306/${name}`,
    db: () => k,
    drop: async () => {
      await k.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await k.destroy();
    },
  };
}

async function login(url) {
  const r = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: 'bench-password-123' }),
  });
  if (r.status !== 200) throw new Error(`login: ${r.status}`);
  const cookie = r.headers.get('set-cookie').split(';')[0];
  return {
    post: async (p, body) => {
      const res = await fetch(url + p, { method: 'POST', headers: { 'content-type': 'application/json', cookie }, body: JSON.stringify(body) });
      const j = await res.json();
      if (res.status >= 300) throw new Error(`${p}: ${res.status} ${JSON.stringify(j)}`);
      return j;
    },
  };
}

/** CPU seconds of the simulated fleet's processes (they share the machine with the server). */
const fleetCpu = (fleet) => fleet.pids().reduce((sum, pid) => sum + cpuSeconds(pid), 0);

/** MariaDB: rows updated so far (Handler_update) (server-wide: other users of the server count too). */
async function rowsUpdated(kind, db) {
  if (kind !== 'mysql') return NaN;
  const [rows] = await db.raw("SHOW GLOBAL STATUS LIKE 'Handler_update'");
  return Number(rows[0]?.Value ?? NaN);
}

/**
 * Waits until `n` executions of the task are stored in a final state. Polls the task's own row (a
 * primary-key read): the server stores the task's end only after every execution's result is
 * committed, so that is the moment. Counting the executions' rows every 5 ms instead (an index range
 * of 10,000 entries) cost MariaDB ≈ 1 ms of CPU a poll, as much as the writes being measured.
 * The count is checked once at the end.
 */
async function waitStored(db, taskId, n, timeoutMs = 600_000) {
  const deadline = Date.now() + timeoutMs;
  const count = async () =>
    Number(
      (
        await db('executions')
          .where({ task_id: taskId })
          .whereIn('status', ['succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'skipped'])
          .count({ c: '*' })
      )[0].c,
    );
  for (;;) {
    const t = await db('tasks').where({ id: taskId }).first('finished_at');
    if (t?.finished_at != null) {
      const c = await count();
      if (c >= n) return;
      throw new Error(`task ${taskId}: finished with only ${c}/${n} results stored`);
    }
    if (Date.now() > deadline) throw new Error(`task ${taskId}: only ${await count()}/${n} results stored`);
    await sleep(5);
  }
}

async function withServer(kind, name, fn) {
  const dataDir = path.join(outDir, `${name}-${kind}`);
  fs.mkdirSync(dataDir, { recursive: true });
  const d = await database(kind, dataDir);
  const server = await startMusterServer({
    dataDir,
    env: { MUSTER_DB_URL: d.url, ...(process.env.BENCH_SERVER_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_SERVER_NODE_OPTIONS } : {}) },
    nodeArgs: flags.profile ? ['--inspect=127.0.0.1:0'] : [],
  });
  try {
    const profiler = flags.profile ? await inspectorProfiler(server.output()) : null;
    // Profiles only what `fn` marks as measured (between start() and stop()).
    const prof = {
      start: async () => profiler?.start(),
      stop: async () => {
        if (!profiler) return;
        const file = await profiler.stop(path.join(outDir, `${name}-${kind}.cpuprofile`));
        log(`  ${kind}: CPU profile of the measured part: ${path.relative(ROOT, file)}\n${summarizeProfile(file, 30).replace(/^/gm, '    ')}`);
      },
    };
    try {
      return await fn(server, d.db(), prof);
    } finally {
      profiler?.close();
    }
  } finally {
    fs.writeFileSync(path.join(dataDir, 'server.log'), server.output());
    await server.stop();
    await d.drop();
  }
}

async function dispatch(kind) {
  return withServer(kind, 'dispatch', async (server, db, prof) => {
    const fleet = await startFleet({
      url: server.wsUrl,
      enrollToken: server.enrollToken,
      count: N,
      credsDir: path.join(outDir, `creds-d-${kind}`),
      idPrefix: `d${kind[0]}`,
      handlerModules: [EXEC_RESPONDER],
      handlerOptions: { outputBytes: 64 },
    });
    try {
      await fleet.waitConnected(N);
      const api = await login(server.url);
      // The connected fleet's own cost (heartbeats, pings, presence flushes) goes on during the runs:
      // measured idle first, so the runs' CPU can be told apart from it (it grows with their wall time).
      await sleep(1000);
      const idle0 = cpuSeconds(server.pid);
      const dbIdle0 = dbCpu(kind);
      const tIdle = performance.now();
      await sleep(5000);
      const idlePerSec = (cpuSeconds(server.pid) - idle0) / ((performance.now() - tIdle) / 1000);
      const dbIdlePerSec = (dbCpu(kind) - dbIdle0) / ((performance.now() - tIdle) / 1000);
      const times = [];
      let cpuMeasured = 0;
      let fleetMeasured = 0;
      let dbMeasured = 0;
      let dbUpdated = 0;
      let idleShare = 0;
      for (let i = 0; i < RUNS + 2; i++) {
        if (i === 2) await prof.start();
        const c0 = cpuSeconds(server.pid);
        const f0 = fleetCpu(fleet);
        const d0 = dbCpu(kind);
        const u0 = await rowsUpdated(kind, db);
        const t0 = performance.now();
        const task = await api.post('/api/tasks', { script: SCRIPT, targets: { selector: 'all' } });
        const tPost = performance.now() - t0;
        await waitStored(db, task.id, N);
        const ms = performance.now() - t0;
        if (i >= 2) {
          times.push(ms); // two warm-up runs
          cpuMeasured += cpuSeconds(server.pid) - c0;
          fleetMeasured += fleetCpu(fleet) - f0;
          dbMeasured += dbCpu(kind) - d0;
          dbUpdated += (await rowsUpdated(kind, db)) - u0;
          idleShare += (idlePerSec * ms) / 1000;
        }
        if (i === 2) log(`  ${kind}: first measured run ${ms.toFixed(0)} ms (POST answered in ${tPost.toFixed(0)} ms)`);
      }
      await prof.stop();
      const r = {
        kind,
        agents: N,
        runs: times.length,
        cpuPerRun: cpuMeasured / times.length,
        fleetCpuPerRun: fleetMeasured / times.length,
        idleCpuPerSec: idlePerSec,
        execCpuPerRun: (cpuMeasured - idleShare) / times.length,
        dbCpuPerRun: dbMeasured / times.length,
        dbIdleCpuPerSec: dbIdlePerSec,
        dbRowsUpdatedPerRun: dbUpdated / times.length,
        load: os.loadavg()[0],
        p50: pct(times, 50),
        p99: pct(times, 99),
        max: Math.max(...times),
        rssMB: rssBytes(server.pid) / 2 ** 20,
      };
      log(
        `  ${kind}: ${N} agents, ${times.length} runs: p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms, max ${r.max.toFixed(0)} ms; server CPU ${(r.cpuPerRun * 1000).toFixed(0)} ms per run (${((r.cpuPerRun * 1e6) / N).toFixed(0)} µs per execution); idle fleet ${(r.idleCpuPerSec * 1000).toFixed(0)} ms/s, so ${(r.execCpuPerRun * 1000).toFixed(0)} ms per run (${((r.execCpuPerRun * 1e6) / N).toFixed(0)} µs per execution) above idle; simulated fleet CPU ${(r.fleetCpuPerRun * 1000).toFixed(0)} ms per run${Number.isNaN(r.dbCpuPerRun) ? '' : `; MariaDB server CPU ${(r.dbCpuPerRun * 1000).toFixed(0)} ms per run (${(r.dbIdleCpuPerSec * 1000).toFixed(0)} ms/s with the fleet idle), ${r.dbRowsUpdatedPerRun.toFixed(0)} rows updated per run (server-wide)`}; load ${r.load.toFixed(1)}`,
      );
      return r;
    } finally {
      await fleet.stop();
    }
  });
}

async function ingest(kind) {
  return withServer(kind, 'ingest', async (server, db, prof) => {
    const fleet = await startFleet({
      url: server.wsUrl,
      enrollToken: server.enrollToken,
      count: FLOOD_N,
      credsDir: path.join(outDir, `creds-i-${kind}`),
      idPrefix: `i${kind[0]}`,
      handlerModules: [FLOOD],
      handlerOptions: { outputBytes: FLOOD_BYTES },
    });
    try {
      await fleet.waitConnected(FLOOD_N);
      const api = await login(server.url);
      await sleep(1000);
      const rss0 = rssBytes(server.pid);
      let peak = rss0;
      const sampler = setInterval(() => {
        try {
          peak = Math.max(peak, rssBytes(server.pid));
        } catch {
          /* server gone */
        }
      }, 50);
      // With BENCH_MEM=1: the largest V8 heap and external (Buffer) memory seen, to tell live data from allocator slack.
      const mem = { heap: 0, external: 0 };
      const memSampler = process.env.BENCH_MEM
        ? setInterval(() => {
            void fetch(`${server.url}/metrics`)
              .then((x) => x.text())
              .then((t) => {
                const v = (n) => Number((new RegExp(`^${n} (\\d+)`, 'm').exec(t) ?? [])[1] ?? 0);
                mem.heap = Math.max(mem.heap, v('muster_process_nodejs_heap_size_used_bytes'));
                mem.external = Math.max(mem.external, v('muster_process_nodejs_external_memory_bytes'));
              })
              .catch(() => {});
          }, 250)
        : null;
      await prof.start();
      const cpu0 = cpuSeconds(server.pid);
      const db0 = dbCpu(kind);
      const t0 = performance.now();
      const task = await api.post('/api/tasks', { script: 'flood', targets: { selector: 'all' } });
      await waitStored(db, task.id, FLOOD_N);
      const secs = (performance.now() - t0) / 1000;
      const cpuPct = (100 * (cpuSeconds(server.pid) - cpu0)) / secs;
      const dbCpuPct = (100 * (dbCpu(kind) - db0)) / secs;
      await prof.stop();
      clearInterval(sampler);
      if (memSampler) {
        clearInterval(memSampler);
        log(`  ${kind}: max V8 heap used ${(mem.heap / 2 ** 20).toFixed(0)} MB, max external ${(mem.external / 2 ** 20).toFixed(0)} MB`);
      }
      const [{ b }] = await db('executions').where({ task_id: task.id }).sum({ b: 'output_bytes' });
      const [{ tr }] = await db('executions').where({ task_id: task.id, truncated: true }).count({ tr: '*' });
      const stored = Number(b);
      const states = await db('executions').where({ task_id: task.id }).groupBy('status', 'reason').select('status', 'reason').count({ n: '*' });
      log(`  ${kind}: execution states: ${JSON.stringify(states)}`);
      const r = {
        kind,
        agents: FLOOD_N,
        bytesPerAgent: FLOOD_BYTES,
        storedBytes: stored,
        truncated: Number(tr),
        secs,
        mbPerSec: stored / 1e6 / secs,
        rssBeforeMB: rss0 / 2 ** 20,
        rssPeakMB: peak / 2 ** 20,
        rssGrowthMB: (peak - rss0) / 2 ** 20,
        serverCpuPct: cpuPct,
        dbCpuPct,
        mbPerCpuSec: stored / 1e6 / ((cpuPct / 100) * secs),
      };
      log(
        `  ${kind}: ${FLOOD_N} × ${FLOOD_BYTES / 1e6} MB: stored ${(stored / 1e6).toFixed(0)} MB in ${secs.toFixed(1)} s = ${r.mbPerSec.toFixed(1)} MB/s; RSS ${r.rssBeforeMB.toFixed(0)} → peak ${r.rssPeakMB.toFixed(0)} MB (+${r.rssGrowthMB.toFixed(0)} MB); server CPU ${cpuPct.toFixed(0)}% of one core${Number.isNaN(dbCpuPct) ? '' : `, MariaDB server ${dbCpuPct.toFixed(0)}%`}; load ${os.loadavg()[0].toFixed(1)}`,
      );
      return r;
    } finally {
      await fleet.stop();
    }
  });
}

const load0 = os.loadavg()[0];
const kinds = flags.db.split(',').filter(Boolean);
const results = { dispatch: [], ingest: [] };
log(`exec benchmark: ${N} agents × ${RUNS} runs; ${FLOOD_N} agents × ${FLOOD_BYTES / 1e6} MB; ${kinds.join(', ')}; output in ${path.relative(ROOT, outDir)}`);
for (const k of kinds) {
  if (flags.only !== 'ingest') {
    log(`dispatch (${k})`);
    results.dispatch.push(await dispatch(k));
  }
  if (flags.only !== 'dispatch') {
    log(`ingest (${k})`);
    results.ingest.push(await ingest(k));
  }
}
fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2));

if (!flags['no-write']) {
  const cores = os.cpus().length;
  const load1 = os.loadavg()[0];
  const lines = [
    `### ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (\`npm run bench -- exec\`; ${cores} cores; 1-minute load average ${load0.toFixed(1)} at the start, ${load1.toFixed(1)} at the end)`,
    '',
    `Dispatch: a trivial script${SCRIPT_KB ? ` (padded to ${SCRIPT_KB} KiB)` : ''} on ${N} simulated agents (each answers exec.run at once with 64 bytes of output); time from \`POST /api/tasks\` until every result is stored (polled in the database), over ${RUNS} runs after two warm-up runs. Target: p99 under 2 s.`,
    '',
    '| database | agents | p50 | p99 | max | server CPU per run | simulated fleet CPU per run |',
    '|---|---|---|---|---|---|---|',
    ...results.dispatch.map(
      (r) =>
        `| ${r.kind} | ${r.agents} | ${r.p50.toFixed(0)} ms | ${r.p99.toFixed(0)} ms | ${r.max.toFixed(0)} ms | ${(r.cpuPerRun * 1000).toFixed(0)} ms | ${(r.fleetCpuPerRun * 1000).toFixed(0)} ms |`,
    ),
    '',
    `Ingest: ${FLOOD_N} simulated agents each streaming ${FLOOD_BYTES / 1e6} MB at once (32 KiB frames, paused above 1 MiB buffered like the real agent); rate = bytes stored / time from POST until every result is stored; RSS growth = peak server RSS during the run minus RSS before it. Target (MariaDB): ≥ 100 MB/s with RSS growth under 300 MB.`,
    '',
    '| database | stored | time | ingest rate | RSS before | RSS peak | growth | server CPU | MB stored per server CPU-second |',
    '|---|---|---|---|---|---|---|---|---|',
    ...results.ingest.map(
      (r) =>
        `| ${r.kind} | ${(r.storedBytes / 1e6).toFixed(0)} MB | ${r.secs.toFixed(1)} s | ${r.mbPerSec.toFixed(1)} MB/s | ${r.rssBeforeMB.toFixed(0)} MB | ${r.rssPeakMB.toFixed(0)} MB | ${r.rssGrowthMB.toFixed(0)} MB | ${r.serverCpuPct.toFixed(0)}% of a core | ${r.mbPerCpuSec.toFixed(0)} |`,
    ),
    '',
  ];
  const file = path.join(ROOT, 'bench', 'RESULTS.md');
  let text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmark results\n\n';
  const section = lines.join('\n');
  // Newest first, under "## Exec"; earlier subsections stay.
  text = /^## Exec\n/m.test(text) ? text.replace(/^## Exec\n\n?/m, `## Exec\n\n${section}\n`) : `${text.trimEnd()}\n\n## Exec\n\n${section}`;
  fs.writeFileSync(file, `${text.trimEnd()}\n`);
  log('wrote the ## Exec section of bench/RESULTS.md');
}
