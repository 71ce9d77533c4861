/**
 * Updates from the console: upload a real signed agent package in the browser, start a rollout on
 * an agent installed from a package (run through the real launcher under a supervisor that restarts
 * it like systemd), and watch the target go through its states to `succeeded` live, and the agent
 * come back with the new version.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
import { Api, cleanup, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { agentRow, browserAvailable, launch, newPage, screenshot, signIn, STEP_MS, textOf } from './browser.js';

describe.skipIf(!browserAvailable())('console: updates', () => {
  let server: TestServer;
  let api: Api;
  let browser: Browser;
  let next: string;
  let signature: string;
  let id: string;

  beforeAll(async () => {
    const out = bigTmpDir('e2e-pkgs');
    const [base, good] = await Promise.all([buildPackage('1.0.0', out), buildPackage('1.1.0', out)]);
    next = good;
    const keys = await keygen(tmpDir('e2e-keys'));
    signature = (await signPackage(keys.priv, good)).trim();
    server = await startServer({ env: { MUSTER_UPDATE_TIMEOUT_SEC: '90' } });
    trackBigDir(server.dataDir);
    api = await Api.login(server.url);
    const root = bigTmpDir('e2e-root');
    await installAgent(root, ['--server', server.wsUrl, '--token', server.enrollToken, '--package', base, '--public-key', keys.pub, '--name', 'upd-01']);
    supervise(root);
    const idFile = path.join(installPaths(root).state, 'agent-id');
    id = await waitFor(() => (fs.existsSync(idFile) ? fs.readFileSync(idFile, 'utf8').trim() : ''), 'installed agent id', STEP_MS);
    await api.waitAgent(id, 'online');
    browser = await launch();
  }, 240_000);
  afterAll(async () => {
    await browser?.close();
    await stopAllSupervisors();
    await cleanup();
    removeBigDirs();
  });

  it('uploads a package, starts a rollout, and shows per-wave and per-agent progress live', { timeout: 180_000 }, async () => {
    const page = await newPage(browser);
    await signIn(page, server.url, 'admin', 'admin-password-123', '/updates');
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
    await page.goto(`${server.url}/agents`);
    await waitFor(async () => (await textOf(page, agentRow(id)))?.includes('1.1.0'), 'agent back with 1.1.0', STEP_MS);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
