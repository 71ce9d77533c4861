/**
 * Task names and the searchable history in the console: the run form's name (placeholder = the
 * default name), the run view's title, and the history's filters by name or script text, host,
 * user and status, with script previews, targets and an empty state that says why.
 */
import { describe, expect, it } from 'vitest';
import { createTask, waitTask } from '../helpers/exec.js';
import { waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: task names and history search', () => {
  const c = useConsole({ agents: [{ name: 'hs-web' }, { name: 'hs-db' }] });

  it('names a task from the form and finds tasks by text, host, user and status', async () => {
    const operator = await c.api.userWithRole('operator', 'hs-operator');
    await waitTask(c.api, (await createTask(c.api, { script: '# Rotate nginx logs\necho rotating\n', targets: { selector: 'hs-web' } })).id);
    await waitTask(c.api, (await createTask(operator, { script: 'echo checking; grep -q needle_77 /nonexistent\n', targets: { selector: 'hs-db' } })).id);

    const page = await c.signedIn('/run');
    await page.click('[data-test=script-editor] .cm-content');
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.keyboard.type('#!/bin/sh\n# Report free memory\nfree -m\n');
    // The name field offers the default name: the script's first meaningful line.
    await waitFor(
      async () => (await page.getAttribute('[data-test=run-name] input', 'placeholder')) === 'Report free memory',
      'default name as placeholder',
      STEP_MS,
    );
    await page.fill('[data-test=run-name] input', 'Memory check before the release');
    await page.fill('.selector input', 'hs-web,hs-db');
    await page.waitForSelector('[data-test=run-target-count]:has-text("2 agents")');
    await page.click('[data-test=run-submit]');
    await page.waitForURL(/\/tasks\/[^/]+$/);
    await page.waitForSelector('[data-test=task-name]:has-text("Memory check before the release")');
    await page.waitForSelector('[data-test=task-status]:has-text("succeeded")');

    await page.goto(`${c.server.url}/tasks`);
    await waitFor(async () => (await page.$$('[data-test=task-link]')).length === 3, 'three tasks', STEP_MS);
    const names = async () => page.$$eval('[data-test=task-link]', (els) => els.map((e) => e.textContent));
    expect(await names()).toEqual(['Memory check before the release', 'echo checking; grep -q needle_77 /nonexistent', 'Rotate nginx logs']);
    expect(await page.textContent('[data-test=task-preview] >> nth=0')).toContain('# Report free memory');
    expect(await page.textContent('[data-test=task-targets] >> nth=0')).toBe('hs-web,hs-db (2)');
    await screenshot(page, 'history');

    // Script text (not in the name), then a host, a user and a state.
    await page.fill('[data-test=history-q] input', 'free -m');
    await waitFor(async () => JSON.stringify(await names()) === JSON.stringify(['Memory check before the release']), 'search by script text', STEP_MS);
    expect(page.url()).toContain('q=free');
    await page.fill('[data-test=history-q] input', '');
    await page.fill('[data-test=history-target] input', 'hs-db');
    await waitFor(async () => (await names()).length === 2, 'search by host', STEP_MS);
    expect(await names()).toEqual(['Memory check before the release', 'echo checking; grep -q needle_77 /nonexistent']);
    await page.fill('[data-test=history-user] input', 'hs-operator');
    await waitFor(async () => (await names()).length === 1, 'search by user', STEP_MS);
    await page.fill('[data-test=history-user] input', '');
    await page.click('[data-test=history-status]');
    await page.click('.n-base-select-option:has-text("failed")');
    await waitFor(async () => JSON.stringify(await names()) === JSON.stringify(['echo checking; grep -q needle_77 /nonexistent']), 'search by state', STEP_MS);
    // The address keeps the filters: a reload shows the same list.
    await page.reload();
    await waitFor(
      async () => JSON.stringify(await names()) === JSON.stringify(['echo checking; grep -q needle_77 /nonexistent']),
      'filters survive a reload',
      STEP_MS,
    );
    await page.fill('[data-test=history-q] input', 'no-such-text-anywhere');
    await page.waitForSelector('[data-test=history-empty]:has-text("No task matches these filters.")');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
