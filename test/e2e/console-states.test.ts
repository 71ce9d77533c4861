/**
 * Loading, empty and error states of the console's pages (issue 15): on a fresh server every list
 * page says what to do when it is empty; a list whose answer has not come yet shows a skeleton (not
 * an empty state); a list whose request failed shows the server's message with a Retry that loads
 * it; keyboard shortcuts reach the Files page and the page's "new" action.
 */
import type { Route } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { browserAvailable } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: loading, empty and error states', () => {
  const c = useConsole();

  it('says what to do on every empty list page', async () => {
    const page = await c.signedIn();
    const pages: Array<[string, string, string]> = [
      ['/tasks', 'history-empty', 'Run a script'],
      ['/library', 'library-empty', 'New script'],
      ['/files', 'files-empty', 'New managed file'],
      ['/schedules', 'schedules-empty', 'a schedule runs a library script'],
      ['/recordings', 'recordings-empty', 'open one from Terminals'],
      ['/terminals', 'terminals-empty', 'No terminal open yet'],
      ['/updates', 'artifacts-empty', 'build and sign one'],
      ['/updates', 'rollouts-empty', 'pick an uploaded package'],
    ];
    for (const [path, test, says] of pages) {
      await page.goto(`${c.server.url}${path}`);
      const el = await page.waitForSelector(`[data-test=${test}]`);
      expect((await el.textContent()) ?? '', path).toContain(says);
      expect(await page.$('[data-test=load-error]'), path).toBeNull();
    }
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('shows a skeleton until the answer comes, then the list or its empty state', async () => {
    const page = await c.signedIn();
    // Hold the answers until the skeleton has been seen.
    const held: Route[] = [];
    const hold = (route: Route) => void held.push(route);
    const release = async () => {
      for (const r of held.splice(0)) await r.continue();
    };
    /** Lets the held requests through, then stops holding. */
    const stopHolding = async (url: RegExp) => {
      await release();
      await page.unroute(url, hold);
    };
    const rollouts = /\/api\/rollouts(\?|$)/;
    await page.route(rollouts, hold);
    await page.goto(`${c.server.url}/updates`);
    await page.waitForSelector('[data-test=rollouts] [data-test=skeleton]');
    await page.waitForSelector('[data-test=artifacts-empty]');
    expect(await page.$('[data-test=rollouts-empty]')).toBeNull();
    await stopHolding(rollouts);
    await page.waitForSelector('[data-test=rollouts-empty]');
    expect(await page.$('[data-test=skeleton]')).toBeNull();

    const tasks = /\/api\/tasks(\?|$)/;
    await page.route(tasks, hold);
    await page.goto(`${c.server.url}/tasks`);
    await page.waitForSelector('[data-test=history] [data-test=skeleton]');
    expect(await page.$('[data-test=history-empty]')).toBeNull();
    await stopHolding(tasks);
    await page.waitForSelector('[data-test=history-empty]');
    expect(await page.$('[data-test=skeleton]')).toBeNull();
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it("shows a failed load's message with a Retry that loads the list", async () => {
    const page = await c.signedIn();
    const fail = (route: Route) =>
      void route.fulfill({
        status: 503,
        contentType: 'application/json',
        body: JSON.stringify({ error: { code: 'unavailable', message: 'database is restarting' } }),
      });
    const cases: Array<[string, RegExp, string]> = [
      ['/tasks', /\/api\/tasks(\?|$)/, '[data-test=history-empty]'],
      ['/updates', /\/api\/rollouts(\?|$)/, '[data-test=rollouts-empty]'],
      ['/admin?tab=audit', /\/api\/audit(\?|$)/, '[data-test=audit-table] td:has-text("auth.login")'],
      ['/admin?tab=users', /\/api\/users(\?|$)/, 'td:has-text("admin")'],
      ['/recordings', /\/api\/terminals(\?|$)/, '[data-test=recordings-empty]'],
      ['/files', /\/api\/files(\?|$)/, '[data-test=files-empty]'],
      ['/library', /\/api\/scripts(\?|$)/, '[data-test=library-empty]'],
      ['/schedules', /\/api\/schedules(\?|$)/, '[data-test=schedules-empty]'],
    ];
    for (const [path, api, loaded] of cases) {
      await page.route(api, fail);
      await page.goto(`${c.server.url}${path}`);
      const err = await page.waitForSelector('[data-test=load-error]');
      expect(await err.textContent(), path).toContain('database is restarting');
      await page.unroute(api, fail);
      await page.click('[data-test=load-retry]');
      await page.waitForSelector('[data-test=load-error]', { state: 'detached' });
      await page.waitForSelector(loaded);
    }
    // A rollout that does not exist: its page says so, with a retry, instead of staying blank.
    await page.goto(`${c.server.url}/updates/rollouts/00000000-0000-0000-0000-000000000000`);
    expect(await (await page.waitForSelector('[data-test=load-error]')).textContent()).toContain('rollout not found');
    expect(await page.$('[data-test=skeleton]')).toBeNull();
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('reaches Files with g f, lists it under ?, and starts a new item with n', async () => {
    const page = await c.signedIn();
    await page.waitForSelector('[data-test=dashboard]');
    await page.keyboard.press('?');
    const help = (await (await page.waitForSelector('[data-test=shortcuts-help]')).textContent()) ?? '';
    for (const k of ['Files', 'Broadcast terminals', 'API tokens', 'New item on the page']) expect(help).toContain(k);
    await page.keyboard.press('Escape');
    await page.waitForSelector('[data-test=shortcuts-help]', { state: 'detached' });
    await page.keyboard.press('g');
    await page.keyboard.press('f');
    await page.waitForURL(/\/files$/);
    await page.waitForSelector('[data-test=files-empty]');
    await page.keyboard.press('n');
    await page.waitForURL(/\/files\/new$/);
    await page.waitForSelector('[data-test=file-path]');
    await page.keyboard.press('g');
    await page.keyboard.press('l');
    await page.waitForURL(/\/library$/);
    await page.waitForSelector('[data-test=library-empty]');
    await page.keyboard.press('n');
    await page.waitForURL(/\/library\/new$/);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
