/**
 * Issue 10, defect 6: a database outage while a task floods output. MariaDB sits behind a TCP
 * proxy that first black-holes it (a partition: nothing is refused, nothing answers), then
 * refuses it, then lets it back. Meanwhile:
 *  - the agent stays online: the socket the server paused for backpressure is not reaped by the
 *    heartbeat sweep, and the agent's liveness pings are answered by the server's keepalive pongs;
 *  - the API answers 503 `database_unavailable` with Retry-After, never 500 (an output read with
 *    `fromSeq`, which waits for stored output, too: at once, not after the outage);
 *  - /readyz answers (503) within a few seconds, even during the partition;
 *  - the output flush retries back off (a few log lines, not one per attempt);
 *  - no output is lost: the execution's stored output has every line once the database is back.
 * MariaDB only (SQLite has no network to lose); mandatory with CI=true, skipped loudly elsewhere.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTask, outputText, waitExecution, waitTask } from '../helpers/exec.js';
import {
  Api,
  agentId,
  cleanup,
  createMysqlDatabase,
  databases,
  sleep,
  startAgent,
  startServer,
  waitFor,
  type TestAgent,
  type TestServer,
} from '../helpers/harness.js';
import { startProxy, type CuttableProxy } from '../helpers/tcp-proxy.js';

const dbs = await databases();

/** The outage: a partition, then refused connections, each this long. */
const PARTITION_MS = 8000;
const REFUSE_MS = 8000;
/** Output of the task: BURSTS bursts of LINES lines, a short pause between bursts. */
const BURSTS = 40;
const LINES = 10_000;
const SCRIPT = `for b in $(seq 1 ${BURSTS}); do seq -f "burst $b line %06g ........................................................" 1 ${LINES}; sleep 0.2; done`;
/** A functional bound (the probe's own timeout is 0.8 s), not a benchmark. */
const READYZ_BOUND_MS = 3000;
/** Log lines about failing or recovering writes the whole outage may cost (one per state change each). */
const MAX_WRITE_LOG_LINES = 6;

describe.skipIf(!dbs.includes('mysql'))('database outage under an output flood (defect 6, MariaDB)', () => {
  let proxy: CuttableProxy;
  let s: TestServer;
  let agent: TestAgent;
  let api: Api;
  let id: string;
  let dropDb: () => Promise<void> = async () => {};

  beforeAll(async () => {
    const db = await createMysqlDatabase();
    dropDb = db.drop;
    proxy = await startProxy(3306);
    const url = db.url.replace('127.0.0.1:3306', `127.0.0.1:${proxy.port}`);
    s = await startServer({
      dbUrl: url,
      env: {
        // Three missed heartbeats = 3 s: the outage is five times longer than what the sweep allows.
        MUSTER_HEARTBEAT_INTERVAL_MS: '1000',
        MUSTER_MAX_OUTPUT_BYTES: String(256 << 20),
        MUSTER_DB_QUERY_TIMEOUT_MS: '3000',
        MUSTER_DB_CONNECT_TIMEOUT_MS: '2000',
        MUSTER_DB_ACQUIRE_TIMEOUT_MS: '3000',
        MUSTER_DB_RETRY_MAX_MS: '2000',
      },
    });
    api = await Api.login(s.url);
    agent = startAgent(s, { name: 'outage' });
    id = await agentId(agent);
    await api.waitAgent(id, 'online');
  }, 60_000);

  afterAll(async () => {
    proxy?.restore();
    await cleanup();
    await proxy?.close();
    await dropDb();
  });

  /** One /readyz call: its status and how long it took. */
  async function readyz(): Promise<{ status: number; ms: number; body: any }> {
    const t0 = Date.now();
    const r = await fetch(`${s.url}/readyz`);
    const body = await r.json();
    return { status: r.status, ms: Date.now() - t0, body };
  }

  /** Polls an API call until it answers 503 database_unavailable; returns that answer. Any 500 fails. */
  async function sees503(): Promise<{ status: number; code: string; retryAfter: string | null }> {
    return waitFor(
      async () => {
        const r = await api.get(`/api/agents/${id}`);
        if (r.status === 500) throw new Error(`500 during the outage: ${JSON.stringify(r.body)}`);
        return r.status === 503 ? { status: r.status, code: r.body?.error?.code, retryAfter: r.headers.get('retry-after') } : null;
      },
      'a 503 from the API during the outage',
      15_000,
      200,
    );
  }

  it('the agent stays online, the API answers 503, /readyz answers promptly, and no output is lost', async () => {
    const t = await createTask(api, { script: SCRIPT, timeoutSec: 900, targets: { agentIds: [id] } });
    const e0 = await waitExecution(api, t.id, (e) => e.status === 'running', 'execution running', 60_000);
    // Let output flow and be stored before the database goes away.
    await waitFor(async () => (await api.get(`/api/executions/${e0.id}`)).body.outputBytes > 1 << 20, 'first MiB stored', 60_000);

    proxy.blackhole();
    const during: Array<{ phase: string; status: number; ms: number }> = [];
    const partitionEnd = Date.now() + PARTITION_MS;
    const api503 = await sees503();
    expect(api503).toEqual({ status: 503, code: 'database_unavailable', retryAfter: expect.stringMatching(/^\d+$/) });
    while (Date.now() < partitionEnd) {
      const r = await readyz();
      during.push({ phase: 'partition', status: r.status, ms: r.ms });
      await sleep(500);
    }

    proxy.cut();
    const refuseEnd = Date.now() + REFUSE_MS;
    expect(await sees503()).toMatchObject({ status: 503, code: 'database_unavailable' });
    // A catch-up read of live output (fromSeq) does not wait for the output writer through the outage.
    const caughtUp = await api.get(`/api/executions/${e0.id}/output?fromSeq=0`);
    expect(caughtUp.status).toBe(503);
    expect(caughtUp.body.error.code).toBe('database_unavailable');
    while (Date.now() < refuseEnd) {
      const r = await readyz();
      during.push({ phase: 'refused', status: r.status, ms: r.ms });
      await sleep(500);
    }
    proxy.restore();

    // /readyz answered every time, promptly, and said "not ready" once the probe saw the outage.
    expect(during.length).toBeGreaterThan(4);
    for (const r of during) expect(r.ms, JSON.stringify(r)).toBeLessThan(READYZ_BOUND_MS);
    expect(during.filter((r) => r.phase === 'partition' && r.status === 503).length).toBeGreaterThan(0);
    expect(during.filter((r) => r.phase === 'refused').every((r) => r.status === 503)).toBe(true);
    await waitFor(async () => (await readyz()).status === 200, 'ready again', 30_000);

    const done = await waitTask(api, t.id, 600_000);
    const e = done.executions[0];
    expect(e.status).toBe('succeeded');
    expect(e.truncated).toBe(false);
    const text = await outputText(api, e.id);
    const lines = text.split('\n').filter(Boolean);
    expect(lines.length).toBe(BURSTS * LINES);
    expect(lines[0]).toMatch(/^burst 1 line 000001 /);
    expect(lines[lines.length - 1]).toMatch(new RegExp(`^burst ${BURSTS} line ${String(LINES).padStart(6, '0')} `));

    // The agent never went offline: one connection, still open, and no heartbeat timeout recorded.
    const conns = (await api.get(`/api/agents/${id}/connections`)).body.items as any[];
    expect(conns.map((c) => c.reason ?? null)).toEqual([null]);
    expect(s.output()).not.toMatch(/heartbeat timeout/);
    expect(agent.output()).not.toMatch(/server silent|disconnected from server/);
    expect((await api.get(`/api/agents/${id}`)).body.status).toBe('online');

    // No hot loop: the writes' failure and recovery are each told once, not once per attempt.
    const writeLines = s
      .output()
      .split('\n')
      .filter((l) => /execution write/.test(l));
    // The outage did reach the writer, and the output flood did meet backpressure.
    expect(s.output()).toMatch(/execution writes failing; retrying with backoff/);
    expect(s.output()).toMatch(/execution writes recovered/);
    expect(s.output()).toMatch(/output backpressure on/);
    const byPhase = (p: string) => during.filter((r) => r.phase === p);
    process.stdout.write(
      `db-outage figures: /readyz partition ${JSON.stringify(byPhase('partition').map((r) => `${r.status}/${r.ms}ms`))}, ` +
        `refused ${JSON.stringify(byPhase('refused').map((r) => `${r.status}/${r.ms}ms`))}; write log lines ${writeLines.length}\n`,
    );
    process.stdout.write(
      `${s
        .output()
        .split('\n')
        .filter((l) => /execution write|backpressure|presence flush/.test(l))
        .join('\n')}\n`,
    );
    expect(writeLines.length, writeLines.slice(0, 10).join('\n')).toBeLessThanOrEqual(MAX_WRITE_LOG_LINES);
    expect(s.output()).not.toMatch(/"level":"error"[^\n]*unhandled request error/);
  }, 900_000);
});
