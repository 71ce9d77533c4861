/**
 * The agents table over a large fleet, in a real browser: 2,000 agents seeded into the database and
 * shown online by the bench's simulated presence (MUSTER_BENCH_SIMULATED_PRESENCE: in-memory
 * heartbeats through the ordinary presence path; enrolling 2,000 sockets takes minutes on a loaded
 * machine) plus one real raw agent whose status changes, against a real server. The page never
 * loads the fleet: it scrolls through a server-side view, filters by selector on the c.server,
 * follows a visible row's status live, and hands "all matching" to the run form as the selector.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { startServer, waitFor } from '../helpers/harness.js';
import { helloAgent, sampleMetrics, withDb, type RawAgent } from '../helpers/raw-agent.js';
import { agentRow, browserAvailable, signIn, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

const N = 2000;
const ROLES = ['web', 'db', 'cache', 'queue', 'batch'];

describe.skipIf(!browserAvailable())('console: a large fleet', () => {
  let watched: RawAgent;
  let beat: ReturnType<typeof setInterval> | undefined;
  const watchedId = randomUUID();

  const c = useConsole({
    // First start creates the schema; the rows go in while it is stopped; the second start loads them.
    server: async () => {
      const first = await startServer();
      await first.stop();
      await withDb(first.dbUrl, async (db) => {
        const now = Date.now();
        const rows = Array.from({ length: N }, (_, i) => ({
          id: `seed-${String(i).padStart(5, '0')}`,
          name: `sim-${String(i).padStart(5, '0')}`,
          hostname: `host-${i}.sim.example`,
          ips: JSON.stringify([`10.0.${(i >> 8) & 255}.${i & 255}`]),
          external_ip: null,
          platform: 'linux',
          arch: 'x64',
          os: 'Debian GNU/Linux 12',
          version: '0.1.0',
          cpus: 4,
          memory_bytes: 8 * 2 ** 30,
          labels: JSON.stringify({ role: ROLES[i % 5], rack: `r${i % 40}` }),
          label_overrides: null,
          groups: '[]',
          secret_hash: '0'.repeat(64),
          created_at: now,
          connected_at: null,
          last_seen_at: now,
          revoked_at: null,
        }));
        for (let i = 0; i < rows.length; i += 200) await db('agents').insert(rows.slice(i, i + 200));
      });
      return {
        dataDir: first.dataDir,
        dbUrl: first.dbUrl,
        env: { MUSTER_BENCH_SIMULATED_PRESENCE: '0', MUSTER_HEARTBEAT_INTERVAL_MS: '2000', MUSTER_PRESENCE_FLUSH_MS: '500' },
      };
    },
    setup: async (s) => {
      // Sorts first by name: the top row of the default view.
      watched = await helloAgent(s.server.wsUrl, { agentId: watchedId, enrollToken: s.server.enrollToken }, { name: 'aaa-watched' });
      beat = setInterval(() => {
        if (watched.isOpen()) watched.send({ type: 'heartbeat', metrics: sampleMetrics(5) });
      }, 1000);
      await waitFor(async () => (await s.api.get('/api/agents/summary')).body.byStatus.online >= N + 1, 'whole fleet online', 120_000, 500);
    },
    beforeStop: () => {
      clearInterval(beat);
      watched?.close();
    },
    timeoutMs: 300_000,
  });

  it('scrolls, filters and follows a row live without loading the fleet', async () => {
    const page = await c.page();
    const listRequests: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/agents?')) listRequests.push(r.url());
    });
    await signIn(page, c.server.url, 'admin', 'admin-password-123', '/agents');
    await waitFor(async () => (await textOf(page, '[data-test=agents-count]'))?.trim() === `${N + 1} of ${N + 1} agents`, 'fleet count', STEP_MS);
    await page.waitForSelector(`${agentRow(watchedId)}[data-status=online]`);
    // Only the window exists in the DOM.
    expect((await page.$$('[data-test=agent-row]')).length).toBeLessThan(100);

    // Scroll to the end: the last agent by name is shown there, at its index.
    const scroll = (frac: number) =>
      page.$eval(
        '[data-test=agents-table]',
        (el, f) => {
          el.scrollTop = (el.scrollHeight - el.clientHeight) * f;
        },
        frac,
      );
    await scroll(1);
    const last = await page.waitForSelector(`[data-test=agent-row][data-index="${N}"]`);
    expect(await last.textContent()).toContain(`sim-${String(N - 1).padStart(5, '0')}`);
    // The middle: the row at index i is sim-(i-1) (aaa-watched is index 0).
    await scroll(0.5);
    const mid = await waitFor(
      async () => {
        const r = await page.$('[data-test=agent-row][data-index]');
        const idx = Number(await r?.getAttribute('data-index'));
        return idx > N * 0.3 && idx < N * 0.7 ? { r, idx } : null;
      },
      'rows in the middle of the list',
      STEP_MS,
    );
    expect(await mid.r!.textContent()).toContain(`sim-${String(mid.idx - 1).padStart(5, '0')}`);

    // Filter on the server: one rack in 40.
    await scroll(0);
    await page.fill('[data-test=selector-input]', 'labels.rack == "r7"');
    await waitFor(async () => (await textOf(page, '[data-test=agents-count]'))?.trim() === `${N / 40} of ${N + 1} agents`, 'filtered count', STEP_MS);
    await waitFor(async () => (await textOf(page, '[data-test=selector-count]'))?.includes(`${N / 40} matches`), 'selector count', STEP_MS);
    const rows = await page.$$eval('[data-test=agent-row]', (els) => els.map((e) => e.textContent ?? ''));
    expect(rows.length).toBeGreaterThan(5);
    for (const r of rows) expect(r).toContain('rack=r7');

    // A visible row changes status live (no reload).
    await page.fill('[data-test=selector-input]', '');
    await page.waitForSelector(`${agentRow(watchedId)}[data-status=online]`);
    watched.ws.terminate();
    await page.waitForSelector(`${agentRow(watchedId)}[data-status=offline]`, { timeout: 30_000 });
    await waitFor(async () => (await textOf(page, '[data-test=agents-count]'))?.trim() === `${N + 1} of ${N + 1} agents`, 'count unchanged', STEP_MS);

    // The page never asked for the whole fleet.
    expect(listRequests.filter((u) => /limit=(50000|[1-9]\d{3,})/.test(u))).toEqual([]);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('"all matching" goes to the run form as the selector, not as ids', async () => {
    const page = await c.signedIn('/agents');
    await page.fill('[data-test=selector-input]', 'labels.role == "db"');
    const dbCount = N / 5;
    await waitFor(async () => (await textOf(page, '[data-test=agents-count]'))?.trim() === `${dbCount} of ${N + 1} agents`, 'db agents', STEP_MS);
    await page.click('[data-test=select-all]');
    await page.waitForSelector(`[data-test=selected-count]:has-text("${dbCount} selected")`);
    await page.click('[data-test=batch-run]');
    await page.waitForURL(/\/run/);
    expect(await page.inputValue('[data-test=selector-input]')).toBe('labels.role == "db"');
    await waitFor(async () => (await textOf(page, '[data-test=run-target-count]'))?.includes(`${dbCount} agents`), 'run target count', STEP_MS);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
