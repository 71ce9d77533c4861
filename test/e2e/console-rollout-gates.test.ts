/**
 * Starting a rollout from the console asks first, with the number of hosts that can update (the
 * server's preview), and a rollout that waits for approval between waves shows an Approve button
 * that starts the next wave. The agents run from the checkout with an empty install root: they
 * take the update and fail it, which is enough to drive the waves; the stable mark shows which
 * package `latest` (the enrollment command) installs.
 */
import { describe, expect, it } from 'vitest';
import { tmpDir, waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';
import { FAKE_SIG, fakePackage } from '../helpers/agent-packages.js';

describe.skipIf(!browserAvailable())('console: rollout confirmation, approval and stable packages', () => {
  const c = useConsole({
    agents: () => ['gate-a', 'gate-b', 'gate-c'].map((name) => ({ name, labels: { grp: 'gate' }, args: ['--install-root', tmpDir('noinstall')] })),
    setup: async (s) => {
      const r = await s.api.req(
        'POST',
        `/api/artifacts?version=9.1.0&signature=${encodeURIComponent(FAKE_SIG)}&filename=muster-agent-9.1.0-linux-x64.tar.gz`,
        fakePackage('9.1.0'),
        { 'content-type': 'application/octet-stream' },
      );
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    },
    timeoutMs: 120_000,
  });

  it('asks with the count of hosts that can update, then waits for approval between waves', { timeout: 120_000 }, async () => {
    const page = await c.signedIn('/updates');
    // No package is stable yet: the page says new hosts have nothing to install; marking one says which.
    await page.waitForSelector('[data-test=latest-package]:has-text("No package is marked stable")');
    await page.click('[data-test=artifact-stable][data-version="9.1.0"] button:has-text("Mark stable")');
    await page.waitForSelector('[data-test=latest-package]:has-text("9.1.0")');
    expect(await page.textContent('[data-test=artifact-stable][data-version="9.1.0"]')).toContain('latest');

    await page.click('[data-test=rollout-artifact]');
    await page.click('.n-base-select-option:has-text("9.1.0")');
    await page.fill('[data-test=selector-input]', 'labels.grp == "gate"');
    await page.waitForSelector('[data-test=selector-count]:has-text("3 match")');
    await page.fill('input[placeholder="1, 10%, 50%, 100%"]', '1, 100%');
    await page.fill('[data-test=rollout-max-failures] input', '10'); // max failures: these agents fail the update
    await page.click('[data-test=rollout-approval]');
    await page.click('[data-test=rollout-create]');

    // The confirmation, with the server's count: nothing has started yet.
    await page.waitForSelector('[data-test=rollout-confirm]');
    const confirm = await page.textContent('[data-test=rollout-confirm-count]');
    expect(confirm).toContain('3 hosts can update to 9.1.0');
    expect(await page.textContent('[data-test=rollout-confirm]')).toContain('each next wave waits for approval');
    expect((await c.api.get('/api/rollouts')).body.total).toBe(0);
    await screenshot(page, 'rollout-confirm');
    await page.click('[data-test=rollout-confirm-start]');
    await page.waitForURL(/\/updates\/rollouts\/[^/]+$/);

    // The first wave ends (its host fails the update): the rollout waits for approval.
    await page.waitForSelector('[data-test=rollout-state]:has-text("awaiting_approval")', { timeout: STEP_MS });
    expect(await page.textContent('[data-test=rollout-gates]')).toContain('an approval');
    const id = page.url().split('/').pop()!;
    expect((await c.api.get(`/api/rollouts/${id}`)).body.counts).toEqual({ failed: 1, pending: 2 });
    await screenshot(page, 'rollout-approval');
    await page.click('[data-test=rollout-approve]');
    // Approved: the second wave runs and the rollout ends (every host failed the update here).
    await page.waitForSelector('[data-test=rollout-state]:has-text("failed")', { timeout: STEP_MS });
    const v = await waitFor(async () => {
      const r = (await c.api.get(`/api/rollouts/${id}`)).body;
      return r.state === 'failed' ? r : null;
    }, 'rollout done');
    expect(v.counts).toEqual({ failed: 3 });
    const audit = (await c.api.get('/api/audit?action=rollout.approve')).body.items;
    expect(audit.map((e: any) => e.targetId)).toContain(id);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
