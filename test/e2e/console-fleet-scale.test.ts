/**
 * The agents table over a large fleet, in a real browser: 3,000 simulated agents speaking the real
 * protocol (bench/sim/console-agents.mjs) plus one raw agent, a real server. The page never loads
 * the fleet: it scrolls through a server-side view, filters by selector on the server, follows a
 * visible row's status live, and hands "all matching" to the run form as the selector itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, cleanup, ROOT, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { helloAgent, sampleMetrics, type RawAgent } from '../helpers/raw-agent.js';
import { agentRow, browserAvailable, launch, newPage, signIn, STEP_MS, textOf } from './browser.js';

const N = 2000;

describe.skipIf(!browserAvailable())('console: a large fleet', () => {
  let server: TestServer;
  let api: Api;
  let browser: Browser;
  let sim: ChildProcess | undefined;
  let watched: RawAgent;
  let beat: ReturnType<typeof setInterval> | undefined;
  const watchedId = randomUUID();

  beforeAll(async () => {
    server = await startServer({
      env: {
        MUSTER_AGENT_CONNECT_RATE: '100000', MUSTER_ANON_CONNECT_RATE: '100000', MUSTER_ANON_CONNECT_RATE_PER_ADDRESS: '100000',
        MUSTER_HEARTBEAT_INTERVAL_MS: '2000', MUSTER_PRESENCE_FLUSH_MS: '500',
      },
    });
    api = await Api.login(server.url);
    sim = spawn(process.execPath, [path.join(ROOT, 'bench', 'sim', 'console-agents.mjs'), server.wsUrl, server.enrollToken, String(N)], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('simulated fleet not ready in 240 s')), 240_000);
      sim!.stdout!.on('data', (d: Buffer) => { if (String(d).includes('ready')) { clearTimeout(t); resolve(); } });
      sim!.once('exit', (c) => { clearTimeout(t); reject(new Error(`simulated fleet exited ${c}`)); });
    });
    // Sorts first by name: the top row of the default view.
    watched = await helloAgent(server.wsUrl, { agentId: watchedId, enrollToken: server.enrollToken }, { name: 'aaa-watched' });
    beat = setInterval(() => { if (watched.isOpen()) watched.send({ type: 'heartbeat', metrics: sampleMetrics(5) }); }, 1000);
    await waitFor(async () => (await api.get('/api/agents/summary')).body.byStatus.online >= N + 1, 'whole fleet online', 120_000, 500);
    browser = await launch();
  }, 300_000);
  afterAll(async () => {
    clearInterval(beat);
    sim?.kill('SIGKILL');
    watched?.close();
    await browser?.close();
    await cleanup();
  });

  it('scrolls, filters and follows a row live without loading the fleet', async () => {
    const page = await newPage(browser);
    const listRequests: string[] = [];
    page.on('request', (r) => { if (r.url().includes('/api/agents?')) listRequests.push(r.url()); });
    await signIn(page, server.url, 'admin', 'admin-password-123', '/agents');
    await waitFor(async () => (await textOf(page, '[data-test=agents-count]'))?.trim() === `${N + 1} of ${N + 1} agents`, 'fleet count', STEP_MS);
    await page.waitForSelector(`${agentRow(watchedId)}[data-status=online]`);
    // Only the window exists in the DOM.
    expect((await page.$$('[data-test=agent-row]')).length).toBeLessThan(100);

    // Scroll to the end: the last agent by name is shown there, at its index.
    const scroll = (frac: number) => page.$eval('[data-test=agents-table]', (el, f) => {
      el.scrollTop = (el.scrollHeight - el.clientHeight) * f;
    }, frac);
    await scroll(1);
    const last = await page.waitForSelector(`[data-test=agent-row][data-index="${N}"]`);
    expect(await last.textContent()).toContain(`sim-${String(N - 1).padStart(5, '0')}`);
    // The middle: the row at index i is sim-(i-1) (aaa-watched is index 0).
    await scroll(0.5);
    const mid = await waitFor(async () => {
      const r = await page.$('[data-test=agent-row][data-index]');
      const idx = Number(await r?.getAttribute('data-index'));
      return idx > N * 0.3 && idx < N * 0.7 ? { r, idx } : null;
    }, 'rows in the middle of the list', STEP_MS);
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
    const page = await newPage(browser);
    await signIn(page, server.url, 'admin', 'admin-password-123', '/agents');
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
