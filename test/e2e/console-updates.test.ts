/**
 * Updates from the console: upload a real signed agent package in the browser, start a rollout on
 * an agent installed from a package (run through the real launcher under a supervisor that restarts
 * it like systemd), and watch the target go through its states to `succeeded` live, and the agent
 * come back with the new version.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  bigTmpDir,
  buildPackage,
  installAgent,
  installPaths,
  keygen,
  removeBigDirs,
  signPackage,
  stopAllSupervisors,
  supervise,
  trackBigDir,
} from '../helpers/agent-packages.js';
import { tmpDir, waitFor } from '../helpers/harness.js';
import { agentRow, browserAvailable, screenshot, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: updates', () => {
  let base: string;
  let next: string;
  let signature: string;
  let keys: Awaited<ReturnType<typeof keygen>>;
  let id: string;

  const c = useConsole({
    server: async () => {
      const out = bigTmpDir('e2e-pkgs');
      [base, next] = await Promise.all([buildPackage('1.0.0', out), buildPackage('1.1.0', out)]);
      keys = await keygen(tmpDir('e2e-keys'));
      signature = (await signPackage(keys.priv, next)).trim();
      return { env: { MUSTER_UPDATE_TIMEOUT_SEC: '90' } };
    },
    // The agent is installed with the real installer and supervised like systemd would.
    setup: async (s) => {
      trackBigDir(s.server.dataDir);
      const root = bigTmpDir('e2e-root');
      await installAgent(root, ['--server', s.server.wsUrl, '--token', s.server.enrollToken, '--package', base, '--public-key', keys.pub, '--name', 'upd-01']);
      supervise(root);
      const idFile = path.join(installPaths(root).state, 'agent-id');
      id = await waitFor(() => (fs.existsSync(idFile) ? fs.readFileSync(idFile, 'utf8').trim() : ''), 'installed agent id', STEP_MS);
      await s.api.waitAgent(id, 'online');
    },
    beforeStop: stopAllSupervisors,
    afterStop: removeBigDirs,
    timeoutMs: 240_000,
  });

  it('uploads a package, starts a rollout, and shows per-wave and per-agent progress live', { timeout: 180_000 }, async () => {
    const page = await c.signedIn('/updates');
    await page.setInputFiles('[data-test=artifact-file]', next);
    await page.fill('input[placeholder^="signature"]', signature);
    await page.click('button:has-text("Upload")');
    await page.waitForSelector('td:has-text("1.1.0")');
    await page.click('[data-test=rollout-artifact]');
    await page.click('.n-base-select-option:has-text("1.1.0")');
    await page.fill('[data-test=selector-input]', 'upd-01');
    await page.waitForSelector('[data-test=selector-count]:has-text("1 match")');
    await page.fill('input[placeholder="1, 10%, 50%, 100%"]', '1');
    await page.click('[data-test=rollout-create]');
    // Starting asks first, with the number of hosts that can update.
    await page.waitForSelector('[data-test=rollout-confirm]');
    expect(await page.textContent('[data-test=rollout-confirm-count]')).toContain('1 host can update to 1.1.0');
    await page.click('[data-test=rollout-confirm-start]');
    await page.waitForURL(/\/updates\/rollouts\/[^/]+$/);
    // No reload from here on: the steps arrive over the console socket.
    await page.waitForSelector('[data-test=rollout-target][data-state=succeeded]', { timeout: 150_000 });
    await page.waitForSelector('[data-test=rollout-state]:has-text("succeeded")');
    expect(await page.textContent('[data-test=rollout]')).toContain('Wave 1');
    await screenshot(page, 'rollout');
    await page.goto(`${c.server.url}/agents`);
    await waitFor(async () => (await textOf(page, agentRow(id)))?.includes('1.1.0'), 'agent back with 1.1.0', STEP_MS);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
