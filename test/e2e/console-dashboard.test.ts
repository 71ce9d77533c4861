/**
 * The console as a product (issue 15): the dashboard's attention lists and failure trend from real
 * agents and a real failed run, live; the readable audit log (names, details, server-side filters);
 * the password rule shown before submit with a clear error instead of a disabled button; page titles,
 * breadcrumbs and nav icons; keyboard shortcuts and their `?` overlay.
 */
import { describe, expect, it } from 'vitest';
import { createTask, waitTask } from '../helpers/exec.js';
import { waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: dashboard, audit, users, navigation, shortcuts', () => {
  // Only a full disk counts as high here: the machine's own disk must not put the agents on the list.
  const c = useConsole({ server: { env: { MUSTER_DASHBOARD_DISK_PERCENT: '100' } }, agents: [{ name: 'dsh-web' }, { name: 'dsh-gone' }] });
  const okId = () => c.ids[0]!;
  const goneId = () => c.ids[1]!;

  it('shows an offline agent and a failed run on the dashboard, live, with the trend', async () => {
    await waitTask(c.api, (await createTask(c.api, { script: 'echo all good', targets: { agentIds: [okId(), goneId()] } })).id);
    const page = await c.signedIn();
    await page.waitForSelector('[data-test=attention-none]');
    await page.waitForSelector('[data-test=in-progress-none]');
    await waitFor(async () => (await textOf(page, '[data-test=trend]'))?.includes('2 succeeded'), 'trend with two successes', STEP_MS);

    // Live: a run fails and an agent goes away while the page is open.
    const bad = await createTask(c.api, { name: 'Disk cleanup', script: 'echo no space >&2; exit 4', targets: { agentIds: [okId()] } });
    await waitTask(c.api, bad.id);
    await c.agents[1]!.stop();
    const failedRow = `[data-test=attention-failed] [data-test=attention-host][data-agent-id="${okId()}"]`;
    const offlineRow = `[data-test=attention-offline] [data-test=attention-host][data-agent-id="${goneId()}"]`;
    await page.waitForSelector(failedRow, { timeout: STEP_MS });
    await page.waitForSelector(offlineRow, { timeout: STEP_MS });
    expect(await page.textContent(failedRow)).toContain('1 failed run');
    await waitFor(async () => (await textOf(page, '[data-test=trend-failed]'))?.includes('1 failed'), 'trend with the failure', STEP_MS);
    expect(await page.$$('[data-test=trend-bar]')).toHaveLength(24);
    await screenshot(page, 'dashboard');

    // The failure links to its task; the breadcrumb names it; the tab title too.
    await page.click(`${failedRow} a[href="/tasks/${bad.id}"]`);
    await page.waitForURL(new RegExp(`/tasks/${bad.id}$`));
    await waitFor(async () => (await textOf(page, '[data-test=breadcrumb]'))?.includes('Disk cleanup'), 'task name in the breadcrumb', STEP_MS);
    expect(await page.textContent('[data-test=breadcrumb]')).toContain('History');
    expect(await page.title()).toBe('Disk cleanup · Task · Muster');
    await page.click('[data-test=breadcrumb] a:has-text("History")');
    await page.waitForURL(/\/tasks$/);
    expect(await page.textContent('[data-test=page-title]')).toBe('History');

    // The offline host links to its page, named in the breadcrumb.
    await page.goto(`${c.server.url}/`);
    await page.click(`${offlineRow} a:has-text("dsh-gone")`);
    await page.waitForURL(/\/agents\//);
    await waitFor(async () => (await textOf(page, '[data-test=breadcrumb]'))?.includes('dsh-gone'), 'agent name in the breadcrumb', STEP_MS);
    // Every nav entry has its icon.
    const navIcons = await page.$$eval('.n-menu-item', (items) => items.map((i) => i.querySelector('svg[data-icon]') !== null));
    expect(navIcons.length).toBeGreaterThan(8);
    expect(navIcons.every(Boolean)).toBe(true);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('opens the shortcut list with ?, navigates with g a / g d, and focuses the filter with /', async () => {
    const page = await c.signedIn();
    await page.waitForSelector('[data-test=dashboard]');
    await page.keyboard.press('?');
    const help = await page.waitForSelector('[data-test=shortcuts-help]');
    const text = (await help.textContent()) ?? '';
    for (const k of ['Dashboard', 'Agents', 'Run a script', 'Terminals', 'Focus the filter']) expect(text).toContain(k);
    await screenshot(page, 'shortcuts');
    await page.keyboard.press('Escape');
    await page.waitForSelector('[data-test=shortcuts-help]', { state: 'detached' });

    await page.keyboard.press('g');
    await page.keyboard.press('a');
    await page.waitForURL(/\/agents$/);
    await page.waitForSelector('[data-test=agent-row]');
    await page.keyboard.press('/');
    await waitFor(() => page.evaluate(() => (globalThis as any).document.activeElement?.closest('[data-shortcut=filter]') != null), 'filter focused', STEP_MS);
    // Typed into the filter: no shortcut fires (g then d stays text).
    await page.keyboard.type('gd');
    await new Promise((r) => setTimeout(r, 300));
    expect(page.url()).toMatch(/\/agents$/);
    await page.keyboard.press('Escape');
    await page.keyboard.press('g');
    await page.keyboard.press('d');
    await page.waitForURL((u) => new URL(u).pathname === '/');
    await page.waitForSelector('[data-test=dashboard]');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('shows the password rule before submit, says what is wrong, and reads the audit log by names and filters', async () => {
    const page = await c.signedIn('/admin');
    await page.click('text=Users and roles');
    const rule = (await (await page.waitForSelector('[data-test=password-rule]')).textContent()) ?? '';
    const rules = (await c.api.get('/api/auth/password-rules')).body;
    expect(rule).toContain(rules.rule);
    await page.fill('[data-test=new-username] input', 'dsh-dana');
    await page.fill('[data-test=new-password] input', 'short');
    // The field says how far off it is while typing; the button is not disabled.
    await waitFor(async () => (await textOf(page, '[data-test=new-user-form]'))?.includes('3 more characters needed'), 'live password feedback', STEP_MS);
    expect(await page.isDisabled('[data-test=add-user]')).toBe(false);
    await page.click('[data-test=add-user]');
    expect(await (await page.waitForSelector('[data-test=user-error]')).textContent()).toContain('password');
    expect((await c.api.get('/api/users')).body.items.some((u: any) => u.username === 'dsh-dana')).toBe(false);
    await page.fill('[data-test=new-password] input', 'long-enough-pw');
    await page.click('[data-test=add-user]');
    await waitFor(async () => (await c.api.get('/api/users')).body.items.some((u: any) => u.username === 'dsh-dana'), 'user created', STEP_MS);
    await screenshot(page, 'admin-users');

    await page.click('text=Audit log');
    await page.waitForSelector('[data-test=audit-table] td:has-text("user.create")');
    // Names, not ids: the target is the user's name.
    await page.fill('[data-test=audit-action] input', 'user.*');
    await waitFor(async () => (await textOf(page, '[data-test=audit-total]'))?.trim() === '1 events', 'filtered to user.*', STEP_MS);
    expect(await page.textContent('[data-test=audit-target]')).toContain('dsh-dana');
    // Target filter by name, server-side; the agent actions name the agent.
    await page.fill('[data-test=audit-action] input', '');
    await page.fill('[data-test=audit-target-filter] input', 'dsh-web');
    await waitFor(
      async () => {
        const targets = await page.$$eval('[data-test=audit-target]', (els) => els.map((e) => e.textContent ?? ''));
        return targets.length > 0 && targets.every((t) => t.includes('dsh-web'));
      },
      'rows about dsh-web only',
      STEP_MS,
    );
    // Expandable details.
    await page.fill('[data-test=audit-target-filter] input', '');
    await page.fill('[data-test=audit-action] input', 'user.create');
    await waitFor(async () => (await textOf(page, '[data-test=audit-total]'))?.trim() === '1 events', 'one user.create', STEP_MS);
    await page.click('[data-test=audit-table] .n-data-table-expand-trigger');
    expect(await (await page.waitForSelector('[data-test=audit-details]')).textContent()).toContain('"username": "dsh-dana"');
    await screenshot(page, 'admin-audit');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
