/**
 * The agent page: CPU/memory/disk and load history with axes from the server's in-memory history
 * (a 1 s step here, so the test sees several points), facts the agent did not report as "—", the
 * host policy, and a revoked agent that offers no actions.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: agent page', () => {
  const c = useConsole({
    server: { env: { MUSTER_METRICS_HISTORY_STEP_MS: '1000', MUSTER_HEARTBEAT_INTERVAL_MS: '400', MUSTER_PRESENCE_FLUSH_MS: '200' } },
    agents: [{ name: 'detail-a' }],
  });

  it('shows the last window of metrics with axes, "—" for missing facts, the policy, and no actions once revoked', async () => {
    // The API first: points accumulate, one a step, with percentages in range.
    const h = await waitFor(
      async () => {
        const r = await c.api.get(`/api/agents/${c.id}/metrics/history`);
        return r.body.points.length >= 4 ? r.body : null;
      },
      'four history points',
      STEP_MS,
    );
    expect(h).toMatchObject({ stepSec: 1, windowSec: 60 });
    for (const p of h.points) {
      for (const k of ['cpu', 'mem', 'disk']) expect(p[k]).toBeGreaterThanOrEqual(0);
      expect(p.mem).toBeGreaterThan(0);
      expect(p.mem).toBeLessThanOrEqual(100);
      expect(p.disk).toBeGreaterThan(0);
    }
    const times = h.points.map((p: { t: string }) => Date.parse(p.t));
    expect([...times].sort((a, b) => a - b)).toEqual(times);
    expect((await c.api.get('/api/agents/no-such-agent/metrics/history')).status).toBe(404);

    const page = await c.signedIn(`/agents/${c.id}`);
    // A flat line (a busy test machine at 100% CPU) has no height: attached, not "visible".
    await page.waitForSelector('[data-test=agent-history] [data-test=chart-usage] path[data-series=CPU]', { state: 'attached' });
    await waitFor(
      async () => ((await page.getAttribute('[data-test=chart-usage] path[data-series=Memory]', 'd')) ?? '').includes('L'),
      'a memory line',
      STEP_MS,
    );
    expect(await page.$$eval('[data-test=chart-usage] [data-test=chart-xtick]', (els) => els.map((e) => e.textContent))).toEqual([
      '−60 s',
      '−45 s',
      '−30 s',
      '−15 s',
      'now',
    ]);
    expect(await page.textContent('[data-test=chart-usage]')).toContain('100%');
    expect(await page.textContent('[data-test=legend-Disk]')).toMatch(/Disk \d/);
    await page.waitForSelector('[data-test=chart-load] path[data-series="Load (1 min)"]', { state: 'attached' });
    // The local test agent reports no external IP and no groups: shown as "—".
    expect(await page.textContent('[data-test=agent-external-ip]')).toBe('—');
    expect(await page.textContent('[data-test=agent-groups]')).toBe('—');
    await page.waitForSelector('[data-test=agent-policy] [data-test=policy-exec]');
    await page.waitForSelector('[data-test=agent-actions] [data-test=open-terminal]');
    await screenshot(page, 'agent-history');

    expect((await c.api.req('DELETE', `/api/agents/${c.id}`)).status).toBeLessThan(300);
    await page.reload();
    await page.waitForSelector('[data-test=agent-revoked-note]');
    for (const sel of ['agent-actions', 'open-terminal', 'agent-run', 'agent-labels', 'agent-restart', 'agent-revoke'])
      expect(await page.$(`[data-test=${sel}]`)).toBeNull();
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
