/**
 * Admin views, the updates page, the dashboard, and the socket's reconnect/resync when the server
 * restarts under an open console.
 */
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, startAgent, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { agentRow, browserAvailable, launch, newPage, screenshot, signIn, STEP_MS, textOf } from './browser.js';

describe.skipIf(!browserAvailable())('console: admin, updates, dashboard, reconnect', () => {
  let server: TestServer;
  let api: Api;
  let browser: Browser;
  let id: string;

  beforeAll(async () => {
    server = await startServer();
    api = await Api.login(server.url);
    const a = startAgent(server, { name: 'adm-01', labels: { role: 'web' } });
    startAgent(server, { name: 'adm-02', labels: { role: 'db' } });
    id = await agentId(a);
    await api.waitAgent(id, 'online');
    browser = await launch();
  });
  afterAll(async () => {
    await browser?.close();
    await cleanup();
  });

  it('shows the dashboard live, the install command, API tokens once, and the audit log', async () => {
    const page = await newPage(browser);
    await signIn(page, server.url);
    await waitFor(async () => (await textOf(page, '[data-test=count-online]'))?.includes('2'), 'two online on the dashboard', STEP_MS);
    // (The dashboard's and the audit log's screenshots come from console-dashboard.test.ts.)

    await page.goto(`${server.url}/admin`);
    const cmd = await page.waitForSelector('[data-test=install-command]');
    expect(await cmd.textContent()).toContain(server.enrollToken);

    // Enrollment tokens: create one (shown once, in the install command), then revoke it.
    await page.fill('[data-test=enrollment-token-name] input', 'e2e-rack');
    await page.click('[data-test=create-enrollment-token]');
    const enroll = (await (await page.waitForSelector('[data-test=new-enrollment-token]')).textContent())!.trim();
    expect(enroll).toMatch(/^mst_enr_/);
    await waitFor(async () => (await textOf(page, '[data-test=install-command]'))?.includes(enroll), 'install command with the new token', STEP_MS);
    const listed = (await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.name === 'e2e-rack');
    expect(listed.state).toBe('active');
    await screenshot(page, 'admin-enrollment');
    await page.click('[data-test=enrollment-tokens] [data-test=revoke-enrollment-token]');
    await waitFor(
      async () => (await api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.name === 'e2e-rack')?.state === 'revoked',
      'token revoked',
      STEP_MS,
    );

    await page.click('text=API tokens');
    await page.fill('input[placeholder^="token name"]', 'e2e-token');
    await page.click('text=Create API token');
    const token = (await (await page.waitForSelector('[data-test=new-token]')).textContent())!.trim();
    const withToken = new Api(server.url);
    withToken.bearer = token;
    expect((await withToken.get('/api/auth/me')).body.user.username).toBe('admin');

    await page.click('text=Audit log');
    await page.waitForSelector('[data-test=audit-table] td:has-text("token.create")');

    await page.goto(`${server.url}/updates`);
    await page.waitForSelector('[data-test=updates]');
    await screenshot(page, 'updates');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('shows that it is reconnecting when the server goes away, and resynchronises after', async () => {
    const page = await newPage(browser);
    await signIn(page, server.url, 'admin', 'admin-password-123', '/agents');
    await page.waitForSelector(`${agentRow(id)}[data-status=online]`);
    await server.stop();
    await page.waitForSelector('[data-test=reconnecting]', { timeout: 20_000 });
    await screenshot(page, 'reconnecting');
    server = await server.restart();
    // The agent reconnects too; the console refetches and shows it online again without a reload.
    await page.waitForSelector('[data-test=socket-state]:has-text("live")', { timeout: 30_000 });
    expect(await page.$('[data-test=reconnecting]')).toBeNull();
    await page.waitForSelector(`${agentRow(id)}[data-status=online]`, { timeout: 30_000 });
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
