// Simulated fleet: N lightweight agents speaking the real protocol, spread over worker processes
// (each with its open-file limit raised to the hard limit) and over loopback source addresses
// 127.0.0.2, 127.0.0.3, … so ephemeral ports (and TIME_WAIT after a restart) never run out.
//
//   import { startFleet } from './sim/fleet.mjs';
//   const fleet = await startFleet({ url: 'ws://127.0.0.1:8080', enrollToken, count: 5000,
//     handlerModules: [EXEC_RESPONDER], handlerOptions: { outputBytes: 128 }, onEvent: (e) => … });
//   await fleet.waitConnected(5000);
//   …
//   await fleet.stop();
//
// Handler modules are ES modules whose default export `setup(ctx)` returns `{ [messageType]:
// (agent, msg) => void, helloExecutions?(agent) }`; `agent` has id, name, index, send(obj),
// sendBinary(buf); `ctx.options` is `handlerOptions`; `ctx.emit(event)` reaches `onEvent` in the
// parent (batched every statsEveryMs). EXEC_RESPONDER is a built-in one for `exec.run`.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** Built-in handler module answering exec.run (started, one output frame, finished; acks). */
export const EXEC_RESPONDER = path.join(here, 'exec-responder.mjs');

/**
 * Starts `count` simulated agents.
 * @param {object} o
 * @param {string} o.url server ws URL (ws://host:port)
 * @param {string[]} [o.urls] several servers (a cluster's nodes): each agent starts at the first and
 *   moves to the next on every reconnect, like the real agent's comma-separated --server
 * @param {string} o.enrollToken enrollment token (used once per agent; secrets are kept in credsDir)
 * @param {number} o.count agents
 * @param {string} o.credsDir where each worker keeps its agents' secrets between runs
 * @param {string} [o.idPrefix] agent ids are `${idPrefix}-${index}` (default 'sim')
 * @param {number} [o.perWorker] agents per worker process (default 5000)
 * @param {number} [o.addresses] loopback source addresses to spread over (default 32: 127.0.0.2…)
 * @param {string[]} [o.handlerModules]
 * @param {object} [o.handlerOptions]
 * @param {(e: object) => void} [o.onEvent]
 * @param {number} [o.rampPerTick] sockets each worker opens per 10 ms at start (default 500)
 * @param {number} [o.handshakeTimeoutMs] how long an agent waits for the upgrade's answer (default 60,000, the real agent's; connecting has 15 s of it)
 */
export async function startFleet(o) {
  const perWorker = o.perWorker ?? 5000;
  const nAddr = o.addresses ?? 32;
  const localAddresses = Array.from({ length: nAddr }, (_, i) => `127.0.0.${i + 2}`);
  const workers = [];
  const totals = new Map();
  for (let w = 0, first = 0; first < o.count; w++, first += perWorker) {
    const count = Math.min(perWorker, o.count - first);
    const config = {
      url: o.url ?? o.urls?.[0],
      urls: o.urls,
      enrollToken: o.enrollToken,
      first,
      count,
      idPrefix: o.idPrefix ?? 'sim',
      credsFile: path.join(o.credsDir, `creds-${o.idPrefix ?? 'sim'}-${first}.json`),
      localAddresses,
      handlerModules: o.handlerModules ?? [],
      handlerOptions: o.handlerOptions ?? {},
      backoffInitialMs: o.backoffInitialMs,
      backoffMaxMs: o.backoffMaxMs,
      rampPerTick: o.rampPerTick,
      handshakeTimeoutMs: o.handshakeTimeoutMs,
      statsEveryMs: o.statsEveryMs,
      labels: o.labels,
    };
    // bash raises the soft open-file limit to the hard one, then execs node (the IPC fd survives exec).
    const child = spawn('bash', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', process.execPath, path.join(here, 'worker.mjs')], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, MUSTER_SIM_CONFIG: JSON.stringify(config) },
    });
    child.on('message', (m) => {
      if (m?.type !== 'stats') return;
      totals.set(w, m.stats);
      if (o.onEvent) for (const e of m.events) o.onEvent(e);
    });
    workers.push(child);
  }

  const sum = () => {
    const s = {
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
    for (const t of totals.values()) {
      for (const k of Object.keys(s)) if (typeof s[k] === 'number') s[k] += t[k];
      for (const [k, v] of Object.entries(t.messages)) s.messages[k] = (s.messages[k] ?? 0) + v;
      for (const [k, v] of Object.entries(t.netErrorKinds ?? {})) s.netErrorKinds[k] = (s.netErrorKinds[k] ?? 0) + v;
    }
    return s;
  };

  const waitUntil = async (pred, what, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = sum();
      if (totals.size === workers.length && pred(s)) return s;
      if (Date.now() > deadline) throw new Error(`fleet: timed out waiting for ${what}: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  return {
    count: o.count,
    workers: workers.length,
    /** The worker processes' ids (their CPU is the simulation's share of the machine). */
    pids: () => workers.map((w) => w.pid),
    /** Aggregated counters of every worker (updated every statsEveryMs). */
    stats: sum,
    /** Resolves when at least `n` agents (default all) are welcomed and connected. */
    waitConnected: (n = o.count, timeoutMs = 120_000) => waitUntil((s) => s.connected >= n, `${n} connected`, timeoutMs),
    /** Resolves when at most `n` agents are connected. */
    waitDisconnected: (n = 0, timeoutMs = 60_000) => waitUntil((s) => s.connected <= n, `≤${n} connected`, timeoutMs),
    /** Cuts every socket without a close handshake (the agents then reconnect). */
    drop: () => {
      for (const w of workers) w.send({ type: 'drop' });
    },
    /** Says bye on every socket and ends the workers. */
    stop: async () => {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise((resolve) => {
              if (w.exitCode !== null) return resolve();
              const t = setTimeout(() => {
                w.kill('SIGKILL');
                resolve();
              }, 10_000);
              w.once('exit', () => {
                clearTimeout(t);
                resolve();
              });
              w.send({ type: 'stop' });
            }),
        ),
      );
    },
  };
}
