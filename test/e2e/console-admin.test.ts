/**
 * Admin views, the updates page, the dashboard, and the socket's reconnect/resync when the server
 * restarts under an open console.
 */
import { describe, expect, it } from 'vitest';
import { Api, waitFor } from '../helpers/harness.js';
import { agentRow, browserAvailable, screenshot, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: admin, updates, dashboard, reconnect', () => {
  const c = useConsole({
    agents: [
      { name: 'adm-01', labels: { role: 'web' } },
      { name: 'adm-02', labels: { role: 'db' } },
    ],
  });

  it('shows the dashboard live, the install command, API tokens once, and the audit log', async () => {
    const page = await c.signedIn();
    await waitFor(async () => (await textOf(page, '[data-test=count-online]'))?.includes('2'), 'two online on the dashboard', STEP_MS);
    // (The dashboard's and the audit log's screenshots come from console-dashboard.test.ts.)

    await page.goto(`${c.server.url}/admin`);
    const cmd = await page.waitForSelector('[data-test=install-command]');
    expect(await cmd.textContent()).toContain(c.server.enrollToken);

    // Enrollment tokens: create one (shown once, in the install command), then revoke it.
    await page.fill('[data-test=enrollment-token-name] input', 'e2e-rack');
    await page.click('[data-test=create-enrollment-token]');
    const enroll = (await (await page.waitForSelector('[data-test=new-enrollment-token]')).textContent())!.trim();
    expect(enroll).toMatch(/^mst_enr_/);
    await waitFor(async () => (await textOf(page, '[data-test=install-command]'))?.includes(enroll), 'install command with the new token', STEP_MS);
    const listed = (await c.api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.name === 'e2e-rack');
    expect(listed.state).toBe('active');
    await screenshot(page, 'admin-enrollment');
    await page.click('[data-test=enrollment-tokens] [data-test=revoke-enrollment-token]');
    await waitFor(
      async () => (await c.api.get('/api/enrollment/tokens')).body.items.find((t: any) => t.name === 'e2e-rack')?.state === 'revoked',
      'token revoked',
      STEP_MS,
    );

    await page.click('text=API tokens');
    await page.fill('input[placeholder^="token name"]', 'e2e-token');
    await page.click('text=Create API token');
    const token = (await (await page.waitForSelector('[data-test=new-token]')).textContent())!.trim();
    const withToken = new Api(c.server.url);
    withToken.bearer = token;
    expect((await withToken.get('/api/auth/me')).body.user.username).toBe('admin');

    await page.click('text=Audit log');
    await page.waitForSelector('[data-test=audit-table] td:has-text("token.create")');

    await page.goto(`${c.server.url}/updates`);
    await page.waitForSelector('[data-test=updates]');
    await screenshot(page, 'updates');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('shows that it is reconnecting when the server goes away, and resynchronises after', async () => {
    const page = await c.signedIn('/agents');
    await page.waitForSelector(`${agentRow(c.id)}[data-status=online]`);
    await c.server.stop();
    await page.waitForSelector('[data-test=reconnecting]', { timeout: 20_000 });
    await screenshot(page, 'reconnecting');
    await c.restartServer();
    // The agent reconnects too; the console refetches and shows it online again without a reload.
    await page.waitForSelector('[data-test=socket-state]:has-text("live")', { timeout: 30_000 });
    expect(await page.$('[data-test=reconnecting]')).toBeNull();
    await page.waitForSelector(`${agentRow(c.id)}[data-status=online]`, { timeout: 30_000 });
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
