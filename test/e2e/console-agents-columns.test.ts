/**
 * The agents table's layout and per-user columns (issue 15): at 1440x900 the default columns fit
 * without horizontal scrolling and include labels; the column picker hides and shows columns, the
 * choice survives a reload and belongs to the signed-in user (another user of the same browser sees
 * the defaults); cut OS text carries its full text as a title; the filter bar does not move when the
 * match count appears; checkboxes are dark in dark mode. Also the task page's load error + Retry.
 */
import type { Page, Route } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, waitFor } from '../helpers/harness.js';
import { agentRow, browserAvailable, screenshot, signIn, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

// Browser globals used inside page.evaluate callbacks (the tests compile without the DOM library).
interface Rect {
  top: number;
}
declare const document: { querySelector(s: string): { closest(s: string): { getBoundingClientRect(): Rect } | null; getBoundingClientRect(): Rect } | null };
declare const localStorage: Record<string, unknown>;
declare function getComputedStyle(el: unknown): { colorScheme: string; accentColor: string; textOverflow: string };
declare function createImageBitmap(b: Blob): Promise<{ width: number; height: number }>;
declare class OffscreenCanvas {
  constructor(w: number, h: number);
  getContext(
    kind: '2d',
  ): { drawImage(img: unknown, x: number, y: number): void; getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null;
}

const WIDE = { width: 1440, height: 900 };
const LONG_LABELS = { role: 'web', env: 'production', team: 'payments-platform', region: 'eu-west-1', rack: 'r42-row7' };

/** The header's column keys, in order. */
const headerCols = (page: Page) => page.$$eval('[data-test=agents-table] .head [data-col]', (els) => els.map((e) => e.getAttribute('data-col')));

async function signOut(page: Page): Promise<void> {
  await page.click('[data-test=logout]');
  await page.waitForSelector('input[name=username]');
}

/** Toggles a column in the picker (opened and closed around it). */
async function toggleColumn(page: Page, key: string): Promise<void> {
  await page.click('[data-test=columns-button]');
  await page.click(`[data-test=columns-menu] [data-test=column-${key}]`);
  await page.click('[data-test=columns-button]');
  await page.waitForSelector('[data-test=columns-menu]', { state: 'detached' });
}

/** Luminance (0–255) figures of an element's pixels as rendered: decoded in the page, no network. */
async function pixels(page: Page, selector: string): Promise<{ centre: number; min: number; max: number }> {
  const png = (await page.locator(selector).first().screenshot()).toString('base64');
  return page.evaluate(async (b64) => {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const bmp = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const cv = new OffscreenCanvas(bmp.width, bmp.height);
    const cx = cv.getContext('2d')!;
    cx.drawImage(bmp, 0, 0);
    const d = cx.getImageData(0, 0, bmp.width, bmp.height).data;
    const lum = (i: number) => 0.2126 * d[i]! + 0.7152 * d[i + 1]! + 0.0722 * d[i + 2]!;
    let min = 255;
    let max = 0;
    for (let i = 0; i < d.length; i += 4) {
      min = Math.min(min, lum(i));
      max = Math.max(max, lum(i));
    }
    const centre = lum((Math.floor(bmp.height / 2) * bmp.width + Math.floor(bmp.width / 2)) * 4);
    return { centre, min, max };
  }, png);
}

describe.skipIf(!browserAvailable())('console: agents table columns and layout', () => {
  const c = useConsole({
    agents: [
      { name: 'cols-web-01', labels: LONG_LABELS },
      { name: 'cols-db-01', labels: { role: 'db' } },
    ],
  });

  it('fits the default columns, labels included, in 1440 px; OS cells carry their full text', async () => {
    const page = await c.signedIn('/agents', undefined, WIDE);
    await page.waitForSelector(`${agentRow(c.ids[0]!)}[data-status=online]`);
    expect(await headerCols(page)).toEqual(['status', 'name', 'ip', 'version', 'cpu', 'mem', 'lastSeen', 'os', 'labels']);
    const size = await page.$eval('[data-test=agents-table]', (el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    expect(size.scroll).toBeLessThanOrEqual(size.client);
    // The labels column shows the agent's labels.
    expect(await page.textContent(agentRow(c.ids[0]!))).toContain('team=payments-platform');
    // The OS cell: cut with an ellipsis, its title is the whole text.
    const cols = await headerCols(page);
    const os = await page.$eval(`${agentRow(c.ids[0]!)} > .c:not(.sel):nth-of-type(${cols.indexOf('os') + 2})`, (el) => ({
      title: el.getAttribute('title'),
      text: el.textContent,
      overflow: getComputedStyle(el).textOverflow,
    }));
    const agent = (await c.api.get(`/api/agents/${c.ids[0]}`)).body;
    expect(os.text).toBe(`${agent.platform}/${agent.arch} ${agent.os}`);
    expect(os.title).toBe(os.text);
    expect(os.overflow).toBe('ellipsis');
    // The column picker lists every column, the shown ones ticked.
    await page.click('[data-test=columns-button]');
    const ticked = await page.$$eval('[data-test=columns-menu] .n-checkbox', (els) =>
      els.map((e) => `${e.getAttribute('data-test')}:${e.getAttribute('aria-checked')}`),
    );
    expect(ticked).toEqual([
      'column-status:true',
      'column-name:true',
      'column-hostname:false',
      'column-ip:true',
      'column-version:true',
      'column-cpu:true',
      'column-mem:true',
      'column-lastSeen:true',
      'column-os:true',
      'column-externalIp:false',
      'column-labels:true',
    ]);
    await screenshot(page, 'agents-columns');
    await page.click('[data-test=columns-button]');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('keeps the column choice per user across reloads; another user of the browser sees the defaults', async () => {
    const operator = 'cols-operator';
    await c.api.userWithRole('operator', operator);
    const page = await c.signedIn('/agents', undefined, WIDE);
    await page.waitForSelector(agentRow(c.ids[0]!));
    await toggleColumn(page, 'version');
    await toggleColumn(page, 'hostname');
    const mine = ['status', 'name', 'hostname', 'ip', 'cpu', 'mem', 'lastSeen', 'os', 'labels'];
    expect(await headerCols(page)).toEqual(mine);
    // The hostname column shows hostnames, the version column is gone from the rows too.
    const agent = (await c.api.get(`/api/agents/${c.ids[0]}`)).body;
    expect(await page.textContent(agentRow(c.ids[0]!))).toContain(agent.hostname);
    expect(await page.$$eval(`${agentRow(c.ids[0]!)} > .c:not(.sel)`, (els) => els.length)).toBe(mine.length);
    await page.reload();
    await page.waitForSelector(agentRow(c.ids[0]!));
    expect(await headerCols(page)).toEqual(mine);

    // Same browser, another user: the defaults, and a choice of their own.
    await signOut(page);
    await signIn(page, c.server.url, operator, 'password-123', '/agents');
    await page.waitForSelector(agentRow(c.ids[0]!));
    const defaults = ['status', 'name', 'ip', 'version', 'cpu', 'mem', 'lastSeen', 'os', 'labels'];
    expect(await headerCols(page)).toEqual(defaults);
    await toggleColumn(page, 'labels');
    expect(await headerCols(page)).toEqual(defaults.filter((k) => k !== 'labels'));
    // The name column cannot be hidden.
    await page.click('[data-test=columns-button]');
    expect(await page.getAttribute('[data-test=column-name]', 'class')).toContain('n-checkbox--disabled');
    await page.click('[data-test=column-name]');
    await page.click('[data-test=columns-button]');
    await page.waitForSelector('[data-test=columns-menu]', { state: 'detached' });
    expect(await headerCols(page)).toContain('name');

    await page.goto(`${c.server.url}/agents`);
    await signOut(page);
    await signIn(page, c.server.url, 'admin', ADMIN_PASSWORD, '/agents');
    await page.waitForSelector(agentRow(c.ids[0]!));
    expect(await headerCols(page)).toEqual(mine);
    const keys = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('muster.agents.columns')));
    expect(keys).toHaveLength(2);
    expect(keys.some((k) => /^muster\.agents\.columns\.\d+\.admin$/.test(k))).toBe(true);
    expect(keys.some((k) => /^muster\.agents\.columns\.\d+\.cols-operator$/.test(k))).toBe(true);
    // Back to the defaults.
    await page.click('[data-test=columns-button]');
    await page.click('[data-test=columns-reset]');
    await page.click('[data-test=columns-button]');
    await waitFor(async () => JSON.stringify(await headerCols(page)) === JSON.stringify(defaults), 'default columns again', STEP_MS);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('does not move the filter box when the match count appears', async () => {
    const page = await c.signedIn('/agents', undefined, WIDE);
    await page.waitForSelector(agentRow(c.ids[0]!));
    // The input's box and the table's top (a count wrapping to a line of its own pushes the table down).
    const box = () =>
      page.evaluate(() =>
        JSON.stringify([
          document.querySelector('[data-test=selector-input]')!.closest('.n-input')!.getBoundingClientRect(),
          document.querySelector('[data-test=agents-table]')!.getBoundingClientRect().top,
        ]),
      );
    const before = await box();
    expect(await page.$('[data-test=selector-count]')).toBeNull();
    await page.fill('[data-test=selector-input]', 'labels.role == "web"');
    await waitFor(async () => (await textOf(page, '[data-test=selector-count]'))?.includes('1 match'), 'match count', STEP_MS);
    await waitFor(async () => (await textOf(page, '[data-test=agents-count]'))?.startsWith('1 of'), 'rows filtered', STEP_MS);
    expect(await box()).toBe(before);
    // A syntax error opens a line under the box: the controls beside it stay where they were.
    const side = () => page.$eval('[data-test=columns-button]', (el) => JSON.stringify(el.getBoundingClientRect()));
    const sideBefore = await side();
    await page.fill('[data-test=selector-input]', 'labels.role == ');
    await page.waitForSelector('[data-test=selector-error]');
    expect(await side()).toBe(sideBefore);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('draws the row checkboxes dark in dark mode, with a visible edge', async () => {
    const page = await c.signedIn('/agents', undefined, WIDE);
    await page.waitForSelector(agentRow(c.ids[0]!));
    const box = `${agentRow(c.ids[0]!)} input[type=checkbox]`;
    const cell = `${agentRow(c.ids[0]!)} .c.sel`;
    const style = () => page.$eval(box, (el) => ({ scheme: getComputedStyle(el).colorScheme, accent: getComputedStyle(el).accentColor }));
    if ((await page.getAttribute('html', 'data-theme')) === 'dark') await page.click('[data-test=theme-switch]');
    await page.waitForSelector('html[data-theme=light]', { state: 'attached' });
    const light = await style();
    const lightPx = await pixels(page, box);
    await page.click('[data-test=theme-switch]');
    await page.waitForSelector('html[data-theme=dark]', { state: 'attached' });
    const dark = await style();
    expect(dark.scheme).toBe('dark');
    expect(dark).not.toEqual(light);
    // Unchecked: a light box on the light page, a dark box on the dark page — its edge still stands out.
    const darkPx = await pixels(page, box);
    const background = (await pixels(page, cell)).min;
    expect(lightPx.centre).toBeGreaterThan(200);
    expect(darkPx.centre).toBeLessThan(110);
    expect(darkPx.max - background).toBeGreaterThan(60);
    // Checked: the accent fills it.
    await page.check(box);
    const checked = await pixels(page, box);
    expect(checked.centre).not.toBeCloseTo(darkPx.centre, 0);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it("shows a task page's load error with a Retry that loads the task", async () => {
    const r = await c.api.post('/api/tasks', { name: 'retry-me', script: 'echo retried', interpreter: 'sh', targets: { agentIds: [c.ids[0]] } });
    expect(r.status).toBe(201);
    const taskId: string = r.body.id;
    await waitFor(async () => (await c.api.get(`/api/tasks/${taskId}`)).body.status === 'succeeded', 'task done', STEP_MS);
    const page = await c.signedIn('/agents', undefined, WIDE);
    const api = new RegExp(`/api/tasks/${taskId}$`);
    const fail = (route: Route) =>
      void route.fulfill({
        status: 503,
        contentType: 'application/json',
        body: JSON.stringify({ error: { code: 'unavailable', message: 'database is restarting' } }),
      });
    await page.route(api, fail);
    await page.goto(`${c.server.url}/tasks/${taskId}`);
    const err = await page.waitForSelector('[data-test=load-error]');
    expect(await err.textContent()).toContain('database is restarting');
    // Nothing of the task's executions without its snapshot.
    expect(await page.$$('[data-test=exec-status]')).toHaveLength(0);
    // Still failing: Retry asks again and keeps saying why.
    let asked = 0;
    page.on('request', (q) => {
      if (api.test(q.url())) asked++;
    });
    await page.click('[data-test=load-retry]');
    await waitFor(() => asked >= 1, 'a second request', STEP_MS);
    await page.waitForSelector('[data-test=load-error]');
    await page.unroute(api, fail);
    await page.click('[data-test=load-retry]');
    await page.waitForSelector('[data-test=load-error]', { state: 'detached' });
    expect(await (await page.waitForSelector('[data-test=task-name]')).textContent()).toContain('retry-me');
    expect(await (await page.waitForSelector('[data-test=exec-status]')).textContent()).toBe('succeeded');
    expect(await textOf(page, '[data-test=task-status]')).toBe('succeeded');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
