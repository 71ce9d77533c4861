// Cluster benchmark (issue 12): several real server nodes (dist/server.js) on one MariaDB database
// (a fresh one per run) and the NATS at 127.0.0.1:4222 (MUSTER_BENCH_NATS_URL overrides it) under
// a cluster prefix of this run's own, with the simulated fleet spread over the nodes.
//
//   npm run bench -- cluster [--agents 45000] [--nodes 3] [--runs 10] [--task-agents 1000]
//                            [--keys 1000] [--mb 20] [--reps 3] [--settle 15] [--window 20]
//                            [--connect-timeout 300] [--handshake-timeout 60] [--no-kill] [--no-write] [--profile]
//
// Phases, in one run:
//  1. Idle fleet: every node's CPU (% of one core, over --window seconds after --settle) and RSS
//     (growth over the node's RSS before the fleet), per node and per agent the node holds.
//  2. A task on --task-agents agents created on node 1, its targets spread evenly over the nodes
//     (by the node each agent is connected to, read from agents.owner_node): time from POST until
//     every result is stored (polled in the database), and per execution (time until its own
//     result is stored), over --runs runs after one warm-up. Target: p99 < 2 s.
//  3. Terminal: a real agent (dist/agent.js, node-pty) connected to node 1; keystroke round trip
//     p50/p99 and `cat` throughput from a console on node 1 (same node) and on node 2 (cross node),
//     beside node-pty directly, in the same run (bench/terminal.mjs's measurements). Target:
//     cross-node throughput ≥ 50 % of direct. Each cat also gives the CPU per MB of every process
//     on the way (both nodes, the local nats-server, the agent): on a saturated machine a path's
//     throughput follows the CPU it costs. --profile: CPU profiles of nodes 1 and 2 over the
//     cross-node cats (bench/out/cluster-*/cross-node-*.cpuprofile, summarized in the output).
//  4. kill -9 of the last node: time until every agent it held is back, connected to the others
//     (in the database: none owned by the dead node, all owned by a live one; and every simulated
//     agent welcomed again).
//
// The open-file limit is per process (20,000 here): a node holds at most that many sockets, so the
// default of 45,000 agents is 15,000 per node, and before the kill enough of the survivors' own
// agents are stopped that each survivor can take its share of the dead node's agents (printed).
// Results: bench/out/cluster-*/results.json, and a dated entry in the "## Cluster" section of
// bench/RESULTS.md (with the machine's load average during each phase).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import knexFactory from 'knex';
import { connect as natsConnect } from 'nats';
import { EXEC_RESPONDER, startFleet } from './sim/fleet.mjs';
import { summarizeProfile } from './lib/cpuprofile.mjs';
import { inspectorProfiler } from './lib/inspector-profile.mjs';
import { cpuSeconds, freePort, nofileHardLimit, ROOT, rssBytes, scrape, sleep, startMusterServer } from './lib/proc.mjs';
import { directKeystrokes, directThroughput, relayKeystrokes, relayThroughput, startAgent } from './terminal.mjs';

const { values: flags } = parseArgs({
  options: {
    agents: { type: 'string', default: '45000' },
    nodes: { type: 'string', default: '3' },
    runs: { type: 'string', default: '10' },
    'task-agents': { type: 'string', default: '1000' },
    keys: { type: 'string', default: '1000' },
    mb: { type: 'string', default: '20' },
    reps: { type: 'string', default: '3' },
    settle: { type: 'string', default: '15' },
    window: { type: 'string', default: '20' },
    'connect-timeout': { type: 'string', default: '300' },
    'handshake-timeout': { type: 'string', default: '60' },
    'no-kill': { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
  },
});
const int = (name, min) => {
  const v = Number(flags[name]);
  if (!Number.isInteger(v) || v < min) throw new Error(`--${name}: a whole number ≥ ${min}, not ${flags[name]}`);
  return v;
};
const N = int('agents', 1);
const NODES = int('nodes', 2);
const RUNS = int('runs', 1);
const TASK_N = Math.min(int('task-agents', 1), N);
const KEYS = int('keys', 10);
const MB = int('mb', 1);
const REPS = int('reps', 1);
const SETTLE_MS = int('settle', 0) * 1000;
const WINDOW_MS = int('window', 1) * 1000;
const NATS_URL = process.env.MUSTER_BENCH_NATS_URL ?? 'nats://127.0.0.1:4222';
const MYSQL = { host: '127.0.0.1', port: 3306, user: 'root', password: '' };
/** Simulated agents per worker process (and per fleet handle, so a part of the fleet can be stopped). */
const PER_WORKER = 5000;
/** Sockets a node may hold: the open-file limit minus room for its own descriptors (database, NATS, consoles, logs). */
const NODE_CAP = nofileHardLimit() - 1500;
/**
 * Connection attempts per second each simulator worker starts with (6 per 10 ms): three workers per
 * node stay under a node's default MUSTER_AGENT_CONNECT_RATE (2,000/s); above it a node sheds with
 * 503 and the agent moves on to the next node, which would skew the spread.
 */
const RAMP_PER_TICK = 6;
/** How long the whole fleet may take to connect (enrollment included) before the run is given up (--connect-timeout, seconds). */
const CONNECT_TIMEOUT_MS = int('connect-timeout', 10) * 1000;
/** How long a simulated agent waits for its upgrade's answer (--handshake-timeout, seconds; 60, the real agent's; figures before 2026-12-03 were measured at 30). */
const HANDSHAKE_TIMEOUT_MS = int('handshake-timeout', 1) * 1000;
const FINAL = ['succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'skipped'];

const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = path.join(ROOT, 'bench', 'out', `cluster-${stamp}`);
fs.mkdirSync(outDir, { recursive: true });
const log = (...a) => process.stdout.write(`${a.join(' ')}\n`);
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};
const MiB = (b) => b / 2 ** 20;
const fds = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;
const fmt = (n) => Math.round(n).toLocaleString('en');

/* ---------------- the machine's load, sampled through the run ---------------- */

const loads = [];
const loadTimer = setInterval(() => loads.push(os.loadavg()[0]), 5000);
loadTimer.unref();
/** The 1-minute load average at the start and end of a phase, and the highest seen in it. */
function loadOf(fn) {
  return async (...a) => {
    const from = loads.length;
    const start = os.loadavg()[0];
    const r = await fn(...a);
    const seen = [start, ...loads.slice(from), os.loadavg()[0]];
    r.load = { start, end: os.loadavg()[0], max: Math.max(...seen) };
    return r;
  };
}
const loadText = (l) => `${l.start.toFixed(1)} → ${l.end.toFixed(1)} (max ${l.max.toFixed(1)})`;

/* ---------------- database, NATS, nodes ---------------- */

async function freshDatabase() {
  const name = `muster_bench_cluster_${process.pid}_${Math.random().toString(36).slice(2, 7)}`;
  const admin = knexFactory({ client: 'mysql2', connection: MYSQL });
  await admin.raw(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  await admin.destroy();
  const k = knexFactory({ client: 'mysql2', connection: { ...MYSQL, database: name }, pool: { min: 1, max: 2 } });
  return {
    name,
    url: `mysql://root:@127.0.0.1:3306/${name}`,
    k,
    drop: async () => {
      await k.raw(`DROP DATABASE IF EXISTS \`${name}\``);
      await k.destroy();
    },
  };
}

/** Deletes the cluster's key-value streams (as test/helpers/cluster.ts does). */
async function dropCluster(cluster) {
  const nc = await natsConnect({ servers: NATS_URL });
  const jsm = await nc.jetstreamManager();
  // Every stream of this run's prefix: the key-value buckets (KV_<cluster>-leases, -nodes) and the
  // object store of file blobs (OBJ_<cluster>-blobs).
  const names = [];
  for await (const s of jsm.streams.list())
    if (/^(KV|OBJ)_/.test(s.config.name) && s.config.name.slice(s.config.name.indexOf('_') + 1).startsWith(`${cluster}-`)) names.push(s.config.name);
  for (const name of names) await jsm.streams.delete(name).catch(() => {});
  await nc.close();
}

async function login(url) {
  const r = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: 'bench-password-123' }),
  });
  if (r.status !== 200) throw new Error(`login at ${url}: ${r.status}`);
  const cookie = r.headers.get('set-cookie').split(';')[0];
  return {
    cookie,
    post: async (p, body) => {
      const res = await fetch(url + p, { method: 'POST', headers: { 'content-type': 'application/json', cookie }, body: JSON.stringify(body) });
      const j = await res.json();
      if (res.status >= 300) throw new Error(`${p}: ${res.status} ${JSON.stringify(j)}`);
      return j;
    },
    get: async (p) => {
      const res = await fetch(url + p, { headers: { cookie } });
      return { status: res.status, body: res.status === 200 ? await res.json() : null };
    },
  };
}

/** Agents each node holds now (agents.owner_node: set on connect, cleared on disconnect or takeover). */
async function ownerCounts(k, simulatedOnly = false) {
  const q = k('agents').whereNotNull('owner_node');
  // Simulated agents' ids start with n<node>w<worker>- (the real agent's is a UUID: hex digits).
  if (simulatedOnly) q.where('id', 'like', 'n%');
  const rows = await q.groupBy('owner_node').select('owner_node').count({ n: '*' });
  return Object.fromEntries(rows.map((r) => [r.owner_node, Number(r.n)]));
}

/* ---------------- phases ---------------- */

/** Every node's CPU over the same window, its RSS and descriptors, and the agents it holds. */
const idle = loadOf(async (nodes, k, fleets) => {
  await sleep(SETTLE_MS);
  const m0 = await Promise.all(nodes.map((n) => scrape(`${n.url}/metrics`)));
  const c0 = nodes.map((n) => cpuSeconds(n.pid));
  const t0 = performance.now();
  await sleep(WINDOW_MS);
  const secs = (performance.now() - t0) / 1000;
  const c1 = nodes.map((n) => cpuSeconds(n.pid));
  const m1 = await Promise.all(nodes.map((n) => scrape(`${n.url}/metrics`)));
  const owners = await ownerCounts(k);
  const perNode = nodes.map((n, i) => {
    const agents = owners[n.id] ?? 0;
    const cpu = (100 * (c1[i] - c0[i])) / secs;
    const rss = rssBytes(n.pid);
    const hb = ((m1[i].get('muster_heartbeats_total') ?? 0) - (m0[i].get('muster_heartbeats_total') ?? 0)) / secs;
    return {
      node: n.id,
      agents,
      cpu,
      cpuUsPerAgentSec: agents ? (cpu * 1e4) / agents : NaN,
      rssMiB: MiB(rss),
      rssIdleMiB: MiB(n.rssBefore),
      rssPerAgentKB: agents ? (rss - n.rssBefore) / 1024 / agents : NaN,
      heartbeatsPerSec: hb,
      heapUsedMiB: MiB(m1[i].get('muster_process_nodejs_heap_size_used_bytes') ?? NaN),
      fds: fds(n.pid),
    };
  });
  // Every simulated agent (and the real one) connected should be owned by exactly the node it is on.
  const owned = Object.values(owners).reduce((a, b) => a + b, 0);
  const simConnected = fleets.reduce((s, f) => s + f.fleet.stats().connected, 0) + 1;
  if (owned !== simConnected)
    log(`  NOTE: ${fmt(simConnected)} agents connected (simulators + the real one) but ${fmt(owned)} owned by a node in the database (agents.owner_node)`);
  for (const r of perNode)
    log(
      `  ${r.node}: ${fmt(r.agents)} agents, CPU ${r.cpu.toFixed(1)} % of a core (${r.cpuUsPerAgentSec.toFixed(1)} µs per agent per second), RSS ${r.rssMiB.toFixed(0)} MiB (${r.rssIdleMiB.toFixed(0)} before the fleet; ${r.rssPerAgentKB.toFixed(1)} KB per agent), JS heap used ${r.heapUsedMiB.toFixed(0)} MiB, ${r.heartbeatsPerSec.toFixed(0)} heartbeats/s, ${fmt(r.fds)} open files`,
    );
  return { secs, perNode, connected: simConnected, owned };
});

/** A task on TASK_N agents spread over the nodes, created on node 1: time until stored, per run and per execution. */
const task = loadOf(async (nodes, k, api) => {
  const rows = await k('agents').whereNotNull('owner_node').where('id', 'like', 'n%').select('id', 'owner_node');
  const byNode = new Map(nodes.map((n) => [n.id, []]));
  for (const r of rows) byNode.get(r.owner_node)?.push(r.id);
  const targets = [];
  for (let i = 0; targets.length < TASK_N; i++) {
    let added = false;
    for (const ids of byNode.values())
      if (i < ids.length && targets.length < TASK_N) {
        targets.push(ids[i]);
        added = true;
      }
    if (!added) break;
  }
  // Only a small fleet can fall short (--task-agents close to --agents, some agents not owned yet).
  if (targets.length < TASK_N) log(`  NOTE: only ${targets.length} simulated agents owned by a node in the database: the task has ${targets.length} targets`);
  const n = targets.length;
  const spread = Object.fromEntries(nodes.map((nd) => [nd.id, targets.filter((id) => byNode.get(nd.id).includes(id)).length]));
  log(`  targets by node: ${JSON.stringify(spread)}`);
  const runs = [];
  const perExec = [];
  const states = {};
  for (let run = 0; run <= RUNS; run++) {
    const seen = new Map();
    const t0 = performance.now();
    const t = await api.post('/api/tasks', { script: 'echo ok', targets: { agentIds: targets } });
    const deadline = Date.now() + 120_000;
    while (seen.size < n) {
      const done = await k('executions').where({ task_id: t.id }).whereIn('status', FINAL).select('id', 'status');
      const now = performance.now() - t0;
      for (const e of done)
        if (!seen.has(e.id)) {
          seen.set(e.id, now);
          if (run > 0) states[e.status] = (states[e.status] ?? 0) + 1;
        }
      if (Date.now() > deadline) throw new Error(`task ${t.id}: only ${seen.size}/${n} results stored after 120 s`);
      if (seen.size < n) await sleep(5);
    }
    const ms = Math.max(...seen.values());
    const [{ c }] = await k('executions').where({ task_id: t.id }).count({ c: '*' });
    if (Number(c) !== n) throw new Error(`task ${t.id}: ${c} executions for ${n} targets`);
    if (run === 0) {
      log(`  warm-up run: ${ms.toFixed(0)} ms`);
      continue;
    }
    runs.push(ms);
    perExec.push(...seen.values());
  }
  const r = {
    agents: n,
    spread,
    runs: runs.length,
    p50: pct(runs, 50),
    p99: pct(runs, 99),
    max: Math.max(...runs),
    execP50: pct(perExec, 50),
    execP99: pct(perExec, 99),
    states,
  };
  log(
    `  ${n} agents × ${runs.length} runs: all stored p50 ${r.p50.toFixed(0)} ms, p99 ${r.p99.toFixed(0)} ms (max ${r.max.toFixed(0)}); per execution p50 ${r.execP50.toFixed(0)} ms, p99 ${r.execP99.toFixed(0)} ms; states ${JSON.stringify(states)}`,
  );
  return r;
});

/** The pid of the local nats-server (null when NATS runs elsewhere or is not readable here). */
function natsServerPid() {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'nats-server') return Number(d);
    } catch {
      /* gone */
    }
  }
  return null;
}

/** A real agent on node 1; consoles on node 1 (same node) and node 2 (cross node); node-pty directly. */
const terminal = loadOf(async (nodes, apis, agentId, agentPid, payload) => {
  const srv = (n) => ({ url: n.url, wsUrl: n.wsUrl, proc: { pid: n.pid } });
  const same = srv(nodes[0]);
  const cross = srv(nodes[1]);
  const keys = {
    direct: await directKeystrokes(KEYS),
    same: await relayKeystrokes(same, apis[0].cookie, agentId, KEYS, agentPid),
    cross: await relayKeystrokes(cross, apis[1].cookie, agentId, KEYS, agentPid),
    routed: await relayKeystrokes(cross, apis[1].cookie, agentId, KEYS, agentPid, { direct: true }),
  };
  const f = (s) => `p50 ${s.p50.toFixed(2)} / p99 ${s.p99.toFixed(2)} ms`;
  log(`  keystrokes: direct ${f(keys.direct)}; same node ${f(keys.same)}; cross node relayed ${f(keys.cross)}; cross node routed ${f(keys.routed)}`);
  // Interleaved repetitions, median of each: other work on the machine hits all three alike.
  const runs = { direct: [], same: [], cross: [], routed: [] };
  // CPU per MB of every process on the path (both nodes, nats-server, the agent): on a saturated
  // machine a path's throughput follows its CPU per MB.
  const natsPid = natsServerPid();
  const procs = [...nodes.map((n) => [n.id, n.pid]), ['nats', natsPid], ['agent', agentPid]].filter(([, pid]) => pid);
  const cpuPerMB = async (run) => {
    const c0 = procs.map(([, pid]) => cpuSeconds(pid));
    const r = await run();
    const mb = r.bytes / 1e6;
    r.cpuMsPerMBAll = Object.fromEntries(procs.map(([k, pid], i) => [k, +(((cpuSeconds(pid) - c0[i]) * 1000) / mb).toFixed(1)]));
    return r;
  };
  // --profile: CPU profiles of nodes 1 and 2 over the cross-node cats only.
  const profilers = flags.profile ? await Promise.all(nodes.slice(0, 2).map((n) => inspectorProfiler(n.output()))) : [];
  for (let i = 0; i < REPS; i++) {
    runs.direct.push(await directThroughput(payload));
    runs.same.push(await cpuPerMB(() => relayThroughput(same, agentPid, apis[0].cookie, agentId, payload)));
    for (const p of profilers) await p.start();
    runs.cross.push(await cpuPerMB(() => relayThroughput(cross, agentPid, apis[1].cookie, agentId, payload)));
    // The console on node 2 asking `direct`: its terminal socket goes to node 1 (MUSTER_NODE_URL), nothing is relayed.
    runs.routed.push(await cpuPerMB(() => relayThroughput(cross, agentPid, apis[1].cookie, agentId, payload, { direct: true })));
    for (const [k, p] of profilers.entries()) {
      const file = path.join(outDir, `cross-${nodes[k].id}-rep${i + 1}.cpuprofile`);
      await p.stop(file);
      if (i === REPS - 1)
        log(`  ${nodes[k].id}: CPU profile of the last cross-node cat: ${path.relative(ROOT, file)}\n${summarizeProfile(file, 25).replace(/^/gm, '    ')}`);
    }
    log(
      `  rep ${i + 1}: same ${runs.same.at(-1).mbps.toFixed(1)} MB/s (${runs.same.at(-1).avgFrame} B/frame) CPU ms/MB ${JSON.stringify(runs.same.at(-1).cpuMsPerMBAll)}; cross ${runs.cross.at(-1).mbps.toFixed(1)} MB/s (${runs.cross.at(-1).avgFrame} B/frame) CPU ms/MB ${JSON.stringify(runs.cross.at(-1).cpuMsPerMBAll)}; routed ${runs.routed.at(-1).mbps.toFixed(1)} MB/s CPU ms/MB ${JSON.stringify(runs.routed.at(-1).cpuMsPerMBAll)}`,
    );
  }
  const median = (xs) => [...xs].sort((a, b) => a.mbps - b.mbps)[Math.floor(xs.length / 2)];
  const tp = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, { ...median(v), runs: v.map((r) => +r.mbps.toFixed(1)) }]));
  tp.sameRatio = tp.same.mbps / tp.direct.mbps;
  tp.crossRatio = tp.cross.mbps / tp.direct.mbps;
  tp.routedRatio = tp.routed.mbps / tp.direct.mbps;
  log(
    `  ${MB} MB cat: direct ${tp.direct.mbps.toFixed(1)} MB/s; same node ${tp.same.mbps.toFixed(1)} MB/s (${(100 * tp.sameRatio).toFixed(0)} %); cross node relayed ${tp.cross.mbps.toFixed(1)} MB/s (${(100 * tp.crossRatio).toFixed(0)} %), routed ${tp.routed.mbps.toFixed(1)} MB/s (${(100 * tp.routedRatio).toFixed(0)} %); runs ${JSON.stringify({ direct: tp.direct.runs, same: tp.same.runs, cross: tp.cross.runs, routed: tp.routed.runs })}`,
  );
  return { keys, throughput: tp };
});

/** kill -9 of the last node: time until every agent it held is connected to another node. */
const kill = loadOf(async (nodes, k, fleets) => {
  const victim = nodes.at(-1);
  const survivors = nodes.slice(0, -1);
  // Room on the survivors for the dead node's agents: stop some of their own first if needed.
  let owners = await ownerCounts(k, true);
  const stopped = [];
  const room = () => {
    const share = Math.ceil(((owners[victim.id] ?? 0) / survivors.length) * 1.1);
    return survivors.filter((n) => (owners[n.id] ?? 0) + share > NODE_CAP);
  };
  for (let full = room(); full.length; full = room()) {
    // A fleet homed on a full node first; agents move between nodes as they reconnect, so when none
    // is left, any fleet of the survivors (its agents are spread over the nodes too).
    const f = fleets.find((x) => !x.stopped && full.some((n) => n.id === x.home)) ?? fleets.find((x) => !x.stopped && survivors.some((n) => n.id === x.home));
    if (!f) throw new Error(`no room on the surviving nodes for the dead node's agents: ${JSON.stringify(owners)}, cap ${NODE_CAP}`);
    await f.fleet.stop();
    f.stopped = true;
    stopped.push(f.fleet.count);
    // The stopped agents' disconnects are written in groups, later under load: wait until the
    // database owns no more agents than the live fleets hold (a fixed pause read stale owners and
    // stopped every fleet of a node whose agents had not been released yet), at most a minute.
    const liveCount = fleets.filter((x) => !x.stopped).reduce((s, x) => s + x.fleet.count, 0);
    for (let i = 0; i < 60; i++) {
      await sleep(1000);
      owners = await ownerCounts(k, true);
      if (Object.values(owners).reduce((a, b) => a + b, 0) <= liveCount) break;
    }
  }
  const live = fleets.filter((f) => !f.stopped);
  const expected = live.reduce((s, f) => s + f.fleet.count, 0);
  const connected = () => live.reduce((s, f) => s + f.fleet.stats().connected, 0);
  const welcomes = () => live.reduce((s, f) => s + f.fleet.stats().welcomes, 0);
  const shed = () => live.reduce((s, f) => s + f.fleet.stats().refused503, 0);
  if (stopped.length)
    log(
      `  stopped ${fmt(stopped.reduce((a, b) => a + b, 0))} of the survivors' own agents first (room for the dead node's share under ${fmt(NODE_CAP)} sockets per node)`,
    );
  for (let i = 0; i < 600 && connected() < expected; i++) await sleep(100);
  owners = await ownerCounts(k, true);
  const held = owners[victim.id] ?? 0;
  log(`  before: ${JSON.stringify(owners)}; ${fmt(connected())}/${fmt(expected)} simulated agents connected; killing ${victim.id}`);
  const owners0 = owners;
  const ownedBefore = Object.values(owners).reduce((a, b) => a + b, 0);
  const closes = () => live.reduce((s, f) => s + f.fleet.stats().closes, 0);
  const w0 = welcomes();
  const c0 = closes();
  const s0 = shed();
  const t0 = performance.now();
  const cpuBeforeKill = survivors.map((n) => cpuSeconds(n.pid));
  victim.child.kill('SIGKILL');
  await victim.exited;
  const timeline = [];
  let agentsBack = null;
  let dbBack = null;
  const deadline = Date.now() + 300_000;
  for (let tick = 0; agentsBack === null || dbBack === null; tick++) {
    const t = (performance.now() - t0) / 1000;
    // Agents' side: every socket the kill cut has been welcomed again by another node (the
    // simulators report every 250 ms; the cut sockets close at once, so they are counted first).
    const cut = closes() - c0;
    if (agentsBack === null && cut > 0 && connected() >= expected && welcomes() - w0 >= cut) agentsBack = t;
    // Database side: no agent left owned by the dead node, and the live nodes own as many as all nodes did.
    owners = await ownerCounts(k, true);
    const onSurvivors = survivors.reduce((s, n) => s + (owners[n.id] ?? 0), 0);
    if (dbBack === null && !owners[victim.id] && onSurvivors >= ownedBefore) dbBack = (performance.now() - t0) / 1000;
    if (tick % 5 === 0) timeline.push([+t.toFixed(1), connected(), owners[victim.id] ?? 0, onSurvivors, shed() - s0]);
    if (Date.now() > deadline) {
      log(`  not all back within 300 s: ${connected()}/${expected} connected, owned ${JSON.stringify(owners)}; timeline ${JSON.stringify(timeline)}`);
      break;
    }
    await sleep(200);
  }
  const after = await ownerCounts(k, true);
  // What the survivors spent from the kill until everything was back (taking the dead node's
  // agents, and their own heartbeats meanwhile), per agent that moved.
  const recoverySec = (performance.now() - t0) / 1000;
  const cpuRecovery = survivors.map((n, i) => ({ node: n.id, cpuSec: cpuSeconds(n.pid) - cpuBeforeKill[i], took: (after[n.id] ?? 0) - (owners0[n.id] ?? 0) }));
  for (const c of cpuRecovery)
    log(
      `  ${c.node}: ${c.cpuSec.toFixed(1)} CPU s in the ${recoverySec.toFixed(1)} s after the kill; took ${fmt(c.took)} agents: ${((1000 * c.cpuSec) / Math.max(1, held)).toFixed(2)} ms per moved agent (all survivors' CPU counted per node)`,
    );
  const r = {
    recoverySec,
    cpuRecovery,
    victim: victim.id,
    held,
    cut: closes() - c0,
    expected,
    stopped: stopped.reduce((a, b) => a + b, 0),
    agentsBackSec: agentsBack,
    dbBackSec: dbBack,
    shed: shed() - s0,
    after,
    timeline,
  };
  const secs = (x) => (x === null ? 'not within 300 s' : `after ${x.toFixed(1)} s`);
  log(
    `  ${fmt(held)} agents owned by ${victim.id} (${fmt(r.cut)} sockets cut): all welcomed again by another node ${secs(agentsBack)}; in the database none owned by ${victim.id} and ${fmt(ownedBefore)} owned by the live nodes ${secs(dbBack)}; ${fmt(r.shed)} upgrades shed with 503; now ${JSON.stringify(after)}`,
  );
  if (process.env.BENCH_VERBOSE) log(`  timeline [s, connected, owned by the dead node, owned by the others, shed]: ${JSON.stringify(timeline)}`);
  return r;
});

/* ---------------- main ---------------- */

const perNode = Array.from({ length: NODES }, (_, i) => Math.floor(N / NODES) + (i < N % NODES ? 1 : 0));
if (perNode[0] > NODE_CAP)
  throw new Error(`${fmt(perNode[0])} agents per node is above what one process can hold here (${fmt(NODE_CAP)}: open-file limit ${fmt(nofileHardLimit())})`);
const cluster = `bench_${process.pid}_${Math.random().toString(36).slice(2, 6)}`;
log(
  `cluster benchmark: ${fmt(N)} simulated agents on ${NODES} nodes (${perNode.map(fmt).join(' / ')}), cluster prefix ${cluster}, NATS ${NATS_URL}; ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, node ${process.version}, load average ${os.loadavg()[0].toFixed(1)}; output in ${path.relative(ROOT, outDir)}`,
);
const started = Date.now();
const db = await freshDatabase();
const nodes = [];
const fleets = [];
let agent = null;
// Interrupted (Ctrl-C, or a harness's SIGTERM): the nodes, the simulators, the agent, the database
// and the cluster's streams go too, as when the run ends (a signal would otherwise skip `finally`
// and leave three nodes and the fleet running).
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    log(`${sig}: stopping the nodes and the simulated fleet`);
    agent?.kill('SIGTERM');
    void Promise.allSettled([...fleets.filter((f) => !f.stopped).map((f) => f.fleet.stop()), ...nodes.map((n) => n.stop())])
      .then(() => Promise.allSettled([db.drop(), dropCluster(cluster)]))
      .finally(() => process.exit(130));
  });
}
const results = { date: new Date().toISOString(), agents: N, nodes: NODES, perNode, cpus: os.cpus().length, loadStart: os.loadavg()[0] };
try {
  // Each node's own address (MUSTER_NODE_URL): a console asking `direct` opens a terminal on the agent's node.
  const ports = [];
  for (let i = 0; i < NODES; i++) ports.push(await freePort());
  const nodeEnv = (i) => ({
    MUSTER_NODE_URL: `http://127.0.0.1:${ports[i]}`,
    MUSTER_DB_URL: db.url,
    MUSTER_NATS_URL: NATS_URL,
    MUSTER_CLUSTER: cluster,
    MUSTER_NODE_ID: `node-${i + 1}`,
    MUSTER_TERMINAL_RECORDING: '1',
    // The measuring consoles send an acknowledgement per burst of terminal output (as bench/terminal.mjs).
    MUSTER_CONSOLE_MESSAGE_RATE: '100000',
    MUSTER_CONSOLE_MESSAGE_BURST: '100000',
  });
  const start = async (i) => {
    const s = await startMusterServer({
      port: ports[i],
      dataDir: path.join(outDir, `node-${i + 1}`),
      env: nodeEnv(i),
      nodeArgs: flags.profile && i < 2 ? ['--inspect=127.0.0.1:0'] : [],
    });
    return { ...s, id: `node-${i + 1}` };
  };
  // Node 1 first (it migrates the fresh database and creates the admin), then the others together.
  nodes.push(await start(0));
  nodes.push(...(await Promise.all(Array.from({ length: NODES - 1 }, (_, i) => start(i + 1)))));
  await sleep(2000);
  for (const n of nodes) n.rssBefore = rssBytes(n.pid);
  const apis = await Promise.all(nodes.map((n) => login(n.url)));

  // The fleet: each node's share in fleets of ≤ PER_WORKER (one worker process each); every agent
  // knows every node, its own node first.
  const t0 = performance.now();
  const cpuBeforeFleet = nodes.map((n) => cpuSeconds(n.pid));
  for (const [i, count] of perNode.entries()) {
    const urls = [nodes[i], ...nodes.slice(i + 1), ...nodes.slice(0, i)].map((n) => n.wsUrl);
    for (let first = 0, w = 0; first < count; first += PER_WORKER, w++) {
      const fleet = await startFleet({
        urls,
        enrollToken: nodes[0].enrollToken,
        count: Math.min(PER_WORKER, count - first),
        credsDir: path.join(outDir, 'creds'),
        idPrefix: `n${i + 1}w${w}`,
        perWorker: PER_WORKER,
        handlerModules: [EXEC_RESPONDER],
        handlerOptions: { outputBytes: 64 },
        rampPerTick: RAMP_PER_TICK,
        handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      });
      fleets.push({ fleet, home: nodes[i].id, stopped: false });
    }
  }
  const connected = () => fleets.reduce((s, f) => s + f.fleet.stats().connected, 0);
  /** The simulators' network errors by kind (code or message), summed. */
  const netKinds = (stats) => {
    const out = {};
    for (const x of stats) for (const [k, v] of Object.entries(x.netErrorKinds ?? {})) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  for (let last = 0; connected() < N;) {
    if (performance.now() - t0 > CONNECT_TIMEOUT_MS) {
      const st = fleets.map((f) => f.fleet.stats());
      const sum = (key) => st.reduce((s, x) => s + x[key], 0);
      throw new Error(
        `fleet: ${connected()}/${N} connected after ${CONNECT_TIMEOUT_MS / 1000} s (refused: ${sum('refused401')} × 401, ${sum('refused503')} × 503, ${sum('refusedOther')} other; ${sum('netErrors')} network errors ${JSON.stringify(netKinds(st))}; ${sum('errorsReceived')} error messages; by node ${JSON.stringify(await ownerCounts(db.k))})`,
      );
    }
    if (performance.now() - last > 10_000) {
      last = performance.now();
      const errs = netKinds(fleets.map((f) => f.fleet.stats()));
      log(
        `  ${fmt(connected())}/${fmt(N)} connected (${((last - t0) / 1000).toFixed(0)} s)${Object.keys(errs).length ? `; network errors so far ${JSON.stringify(errs)}` : ''}`,
      );
    }
    await sleep(100);
  }
  results.connectSec = (performance.now() - t0) / 1000;
  const heldAtConnect = await ownerCounts(db.k);
  log(`fleet: ${fmt(N)} connected in ${results.connectSec.toFixed(1)} s; by node ${JSON.stringify(heldAtConnect)}`);
  // CPU each node spent while the fleet connected (its own connects, the other nodes' presence
  // events, and the heartbeats of the agents already connected), per agent of the fleet.
  results.connectCpu = nodes.map((n, i) => {
    const cpuSec = cpuSeconds(n.pid) - cpuBeforeFleet[i];
    return { node: n.id, held: heldAtConnect[n.id] ?? 0, cpuSec, cpuMsPerFleetAgent: (1000 * cpuSec) / N };
  });
  for (const c of results.connectCpu)
    log(
      `  ${c.node}: ${c.cpuSec.toFixed(1)} CPU s while the fleet connected (${fmt(c.held)} held): ${c.cpuMsPerFleetAgent.toFixed(2)} ms per agent of the fleet`,
    );

  // The real agent for the terminals, on node 1 only.
  const agentDir = path.join(outDir, 'agent');
  agent = startAgent(nodes[0].wsUrl, agentDir);
  let agentId = '';
  for (let i = 0; i < 200 && !agentId; i++) {
    try {
      agentId = fs.readFileSync(path.join(agentDir, 'agent-id'), 'utf8').trim();
    } catch {
      await sleep(100);
    }
  }
  if (!agentId) throw new Error('the real agent wrote no agent-id');
  for (let i = 0; ; i++) {
    const views = await Promise.all(apis.slice(0, 2).map((a) => a.get(`/api/agents/${agentId}`)));
    if (views.every((v) => v.body?.status === 'online')) break;
    if (i > 300) throw new Error(`the real agent is not online on nodes 1 and 2: ${JSON.stringify(views)}`);
    await sleep(100);
  }

  log(`idle fleet (heartbeats only): ${SETTLE_MS / 1000} s settle, ${WINDOW_MS / 1000} s window`);
  results.idle = await idle(nodes, db.k, fleets);

  log(`task on ${TASK_N} agents created on ${nodes[0].id}`);
  results.task = await task(nodes, db.k, apis[0]);

  const payload = path.join(outDir, 'payload.txt');
  {
    const { randomBytes } = await import('node:crypto');
    const fd = fs.openSync(payload, 'w');
    for (let written = 0; written < MB * 1e6;) {
      const chunk = randomBytes(57 * 1000)
        .toString('base64')
        .replace(/(.{76})/g, '$1\n');
      fs.writeSync(fd, chunk);
      written += chunk.length;
    }
    fs.closeSync(fd);
  }
  log(`terminal: real agent on ${nodes[0].id}; consoles on ${nodes[0].id} (same node) and ${nodes[1].id} (cross node)`);
  results.terminal = await terminal(nodes, apis, agentId, agent.pid, payload);
  fs.rmSync(payload, { force: true });
  agent.kill('SIGTERM');
  agent = null;

  if (!flags['no-kill']) {
    log(`kill -9 of ${nodes.at(-1).id}`);
    results.kill = await kill(nodes, db.k, fleets);
  }
} finally {
  agent?.kill('SIGTERM');
  await Promise.all(fleets.filter((f) => !f.stopped).map((f) => f.fleet.stop()));
  // What each node warned about or failed at (its log is at warn level), counted by message and error code.
  results.logs = {};
  for (const n of nodes) {
    fs.writeFileSync(path.join(outDir, `${n.id}.log`), n.output());
    const counts = {};
    for (const line of n.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const e = JSON.parse(line);
        if (e.level !== 'warn' && e.level !== 'error') continue;
        const key = `${e.level} "${e.msg}"${e.err?.code ? ` (${e.err.code})` : e.why ? ` (${String(e.why).slice(0, 60)})` : ''}`;
        counts[key] = (counts[key] ?? 0) + 1;
      } catch {
        /* a partial line */
      }
    }
    results.logs[n.id] = counts;
    const top = Object.entries(counts).sort((a, b) => b[1] - a[1]);
    if (top.length) log(`${n.id} warned/failed: ${top.map(([k, c]) => `${k} × ${c}`).join('; ')}`);
  }
  await Promise.all(nodes.map((n) => n.stop()));
  await db.drop().catch((e) => log(`dropping ${db.name}: ${e.message}`));
  await dropCluster(cluster).catch((e) => log(`dropping the cluster's streams: ${e.message}`));
  clearInterval(loadTimer);
}
results.totalSec = (Date.now() - started) / 1000;
results.loadEnd = os.loadavg()[0];
fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 2));
log(`done in ${results.totalSec.toFixed(0)} s; load average ${results.loadStart.toFixed(1)} → ${results.loadEnd.toFixed(1)}`);

/* ---------------- report ---------------- */

const r = results;
const secs = (x) => (x === null ? 'not within 300 s' : `after ${x.toFixed(1)} s`);
const met = (ok) => (ok ? 'met' : '**missed**');
const ms = (x) => `${x.toFixed(0)} ms`;
const k2 = (s) => `${s.p50.toFixed(2)} / ${s.p99.toFixed(2)} ms`;
const t = r.terminal;
const entry = [
  `### ${r.date.slice(0, 16).replace('T', ' ')} UTC (\`npm run bench -- cluster --agents ${N} --nodes ${NODES}\`; ${r.cpus} cores; 1-minute load average ${r.loadStart.toFixed(1)} at the start, ${r.loadEnd.toFixed(1)} at the end; ${r.totalSec.toFixed(0)} s in all)`,
  '',
  `${fmt(N)} simulated agents (${perNode.map(fmt).join(' / ')} homed on the nodes), connected in ${r.connectSec.toFixed(1)} s.`,
  '',
  `Idle fleet (heartbeats only; ${WINDOW_MS / 1000} s window after ${SETTLE_MS / 1000} s; load ${loadText(r.idle.load)}):`,
  '',
  '| node | agents held | CPU (% of one core) | CPU per agent | RSS (before the fleet) | RSS per agent | heartbeats/s | open files |',
  '|---|---|---|---|---|---|---|---|',
  ...r.idle.perNode.map(
    (p) =>
      `| ${p.node} | ${fmt(p.agents)} | ${p.cpu.toFixed(1)} % | ${p.cpuUsPerAgentSec.toFixed(1)} µs/s | ${p.rssMiB.toFixed(0)} MiB (${p.rssIdleMiB.toFixed(0)}) | ${p.rssPerAgentKB.toFixed(1)} KB | ${p.heartbeatsPerSec.toFixed(0)} | ${fmt(p.fds)} |`,
  ),
  '',
  `Task on ${fmt(r.task.agents)} agents created on node-1, targets by node ${Object.entries(r.task.spread)
    .map(([n, c]) => `${n} ${c}`)
    .join(
      ', ',
    )}; ${r.task.runs} runs after a warm-up (load ${loadText(r.task.load)}): all results stored p50 ${ms(r.task.p50)}, p99 ${ms(r.task.p99)} (max ${ms(r.task.max)}); per execution p50 ${ms(r.task.execP50)}, p99 ${ms(r.task.execP99)}; states ${JSON.stringify(r.task.states)}. Target p99 < 2 s: ${met(r.task.p99 < 2000)}.`,
  '',
  `Terminal, a real agent on node-1 (load ${loadText(t.load)}):`,
  '',
  '| measurement | node-pty direct | console on node-1 (same node) | console on node-2, relayed (node-2 → NATS → node-1) | console on node-2, routed (`direct`: terminal socket on node-1 by its MUSTER_NODE_URL) |',
  '|---|---|---|---|---|',
  `| keystroke p50 / p99 (${KEYS} keys) | ${k2(t.keys.direct)} | ${k2(t.keys.same)} | ${k2(t.keys.cross)} | ${k2(t.keys.routed)} |`,
  `| ${MB} MB cat, median of ${REPS} | ${t.throughput.direct.mbps.toFixed(1)} MB/s | ${t.throughput.same.mbps.toFixed(1)} MB/s (${(100 * t.throughput.sameRatio).toFixed(0)} %) | ${t.throughput.cross.mbps.toFixed(1)} MB/s (${(100 * t.throughput.crossRatio).toFixed(0)} %) | ${t.throughput.routed.mbps.toFixed(1)} MB/s (${(100 * t.throughput.routedRatio).toFixed(0)} %) |`,
  `| (runs, MB/s) | ${t.throughput.direct.runs.join(', ')} | ${t.throughput.same.runs.join(', ')} | ${t.throughput.cross.runs.join(', ')} | ${t.throughput.routed.runs.join(', ')} |`,
  `| CPU per MB of the median run: ${Object.keys(t.throughput.same.cpuMsPerMBAll).join(', ')} (ms) | | ${Object.values(t.throughput.same.cpuMsPerMBAll).join(', ')} | ${Object.values(t.throughput.cross.cpuMsPerMBAll).join(', ')} | ${Object.values(t.throughput.routed.cpuMsPerMBAll).join(', ')} |`,
  '',
  `Cross-node throughput ≥ 50 % of direct: routed (what the web console and \`muster term\` do when nodes have MUSTER_NODE_URL) ${met(t.throughput.routedRatio >= 0.5)}; relayed (nodes without MUSTER_NODE_URL) ${met(t.throughput.crossRatio >= 0.5)}.`,
  '',
  r.kill
    ? `kill -9 of ${r.kill.victim} owning ${fmt(r.kill.held)} agents, ${fmt(r.kill.cut)} sockets cut (load ${loadText(r.kill.load)}${r.kill.stopped ? `; ${fmt(r.kill.stopped)} of the survivors' own agents stopped first, to leave room under the open-file limit` : ''}): every cut agent welcomed again by another node ${secs(r.kill.agentsBackSec)}; in the database none owned by the dead node and all owned by the live ones ${secs(r.kill.dbBackSec)} (${fmt(r.kill.shed)} upgrades shed with 503; then ${Object.entries(
        r.kill.after,
      )
        .map(([n, c]) => `${n} ${fmt(c)}`)
        .join(
          ', ',
        )}). Target all back within 30 s: ${met(r.kill.agentsBackSec !== null && r.kill.dbBackSec !== null && Math.max(r.kill.agentsBackSec, r.kill.dbBackSec) <= 30)}.`
    : 'kill -9: not run (--no-kill).',
  '',
  r.idle.owned !== r.idle.connected
    ? `Consistency: with the fleet idle, ${fmt(r.idle.connected)} agents were connected but ${fmt(r.idle.owned)} owned by a node in the database (agents.owner_node).\n`
    : '',
  `Server warnings and errors (count per node, message and error code): ${
    Object.entries(r.logs)
      .map(
        ([n, m]) =>
          `${n}: ${
            Object.entries(m)
              .map(([k, c]) => `${k} × ${c}`)
              .join('; ') || 'none'
          }`,
      )
      .join('. ') || 'none'
  }.`,
  '',
].join('\n');
process.stdout.write(`\n${entry}\n`);
if (!flags['no-write']) {
  // Newest first, after the section's method text (the marker line); earlier entries stay.
  const file = path.join(ROOT, 'bench', 'RESULTS.md');
  let text = fs.readFileSync(file, 'utf8');
  const marker = '<!-- cluster entries: newest first (bench/cluster.mjs adds them here) -->\n';
  const at = text.indexOf(marker);
  if (at >= 0) text = `${text.slice(0, at + marker.length)}\n${entry}${text.slice(at + marker.length)}`;
  else text = `${text.trimEnd()}\n\n## Cluster\n\n${marker}\n${entry}`;
  fs.writeFileSync(file, text);
  log(`added an entry to the Cluster section of ${path.relative(ROOT, file)}`);
}
