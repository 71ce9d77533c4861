/**
 * The console's schedules page: create a schedule of a library script from the form, see its next
 * five runs, and its history fill with fires whose tasks ran on a real agent.
 */
import { describe, expect, it } from 'vitest';
import { Api } from '../helpers/harness.js';
import { browserAvailable, screenshot } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: schedules', () => {
  const c = useConsole({ server: { env: { MUSTER_SCHEDULE_MIN_INTERVAL_SEC: '1', MUSTER_SCHEDULE_TICK_MS: '200' } }, agents: [{ name: 'sched-e2e' }] });

  it('creates a schedule from the form and shows next runs and history', async () => {
    expect(
      (await c.api.post('/api/scripts', { name: 'tick', body: 'echo "tick $MUSTER_PARAM_WHAT"', params: [{ name: 'what', type: 'string', default: 'tock' }] }))
        .status,
    ).toBe(201);
    const page = await c.signedIn('/schedules');
    await page.click('[data-test=schedule-new]');
    await page.fill('[data-test=schedule-name] input', 'every-two');
    await page.click('[data-test=schedule-script]');
    await page.click('.n-base-select-option:has-text("tick")');
    await page.waitForSelector('[data-test=run-param-what] input');
    await page.fill('[data-test=schedule-selector] input', 'sched-e2e');
    await page.click('.n-radio-button:has-text("Interval")');
    await page.fill('[data-test=schedule-form] .n-input-number input', '2');
    await page.click('[data-test=schedule-create]');
    await page.waitForURL(/\/schedules\/[^/]+$/);
    await page.waitForSelector('[data-test=schedule-next] li:nth-child(5)');
    const list = await c.api.get('/api/schedules');
    expect(list.body.items[0]).toMatchObject({ name: 'every-two', intervalSec: 2, params: { what: 'tock' }, targets: { selector: 'sched-e2e' } });
    // The page refreshes every 10 s; reload to see the fires sooner.
    for (let i = 0; i < 60; i++) {
      const h = await c.api.get(`/api/schedules/${list.body.items[0].id}/history`);
      if (h.body.items.some((f: any) => f.taskStatus === 'succeeded')) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await page.reload();
    await page.waitForSelector('[data-test=schedule-history] :text("succeeded")');
    // The calendar of next runs: an every-2-seconds schedule fills it past MUSTER_SCHEDULE_CALENDAR_MAX_FIRES.
    await page.waitForSelector('[data-test=schedule-calendar] [data-test=calendar-fire]:has-text("every-two")');
    await page.waitForSelector('[data-test=calendar-more]');
    await page.waitForSelector('[data-test=calendar-truncated]');
    expect(await page.$$eval('[data-test=calendar-day]', (d) => d.length)).toBe(7);
    // The days after the last listed run are not shown as empty.
    expect(await page.$$eval('[data-test=calendar-day]', (d) => d[6]!.textContent)).toContain('past the limit');
    await screenshot(page, 'schedules');

    // Once it is disabled, a daily cron shows once a day (7 in a week: 6 on the columns when today's has passed).
    expect((await c.api.req('PATCH', `/api/schedules/${list.body.items[0].id}`, { enabled: false })).status).toBe(200);
    const script = (await c.api.get('/api/scripts/tick')).body;
    const noon = await c.api.post('/api/schedules', { name: 'daily-noon', scriptId: script.id, selector: 'sched-e2e', cron: '0 12 * * *', timeZone: 'UTC' });
    expect(noon.status).toBe(201);
    await page.goto(`${c.server.url}/schedules`);
    await page.waitForSelector('[data-test=calendar-fire]:has-text("daily-noon")');
    expect(await page.$('[data-test=calendar-fire]:has-text("every-two")')).toBeNull();
    expect(await page.$('[data-test=calendar-truncated]')).toBeNull();
    const perDay = await page.$$eval('[data-test=calendar-day]', (days) => days.map((d) => d.querySelectorAll('[data-test=calendar-fire]').length));
    expect(perDay.filter((n) => n === 1).length).toBeGreaterThanOrEqual(6);
    expect(perDay.every((n) => n <= 1)).toBe(true);
    await page.click('[data-test=calendar-fire] a');
    await page.waitForURL(new RegExp(`/schedules/${noon.body.id}$`));
    await page.waitForSelector('[data-test=schedule-detail]:has-text("daily-noon")');
    expect((await c.api.delete(`/api/schedules/${noon.body.id}`)).status).toBe(204);
    expect(page.problems).toEqual([]);
  });

  it("shows the enable switch and Delete only to an admin or the schedule's creator; Delete asks first; token scopes stop at the user's role", async () => {
    const script = (await c.api.post('/api/scripts', { name: 'gated', body: 'true' })).body;
    const mk = (a: Api, name: string) =>
      a.post('/api/schedules', { name, scriptId: script.id, selector: 'nothing-matches', intervalSec: 3600, enabled: false });
    const op = await c.api.userWithRole('operator', 'op-gate');
    const byAdmin = (await mk(c.api, 'admins-own')).body;
    const byOp = (await mk(op, 'operators-own')).body;
    expect(byOp.id).toBeTruthy();
    const page = await c.signedIn(`/schedules/${byAdmin.id}`, { username: 'op-gate', password: 'password-123' });
    await page.waitForSelector('[data-test=schedule-detail]');
    expect(await page.$('[data-test=schedule-delete]')).toBeNull();
    const row = (name: string) => page.$(`[data-test=schedules-table] tr:has-text("${name}") .n-switch--disabled`);
    await page.waitForSelector('[data-test=schedules-table] tr:has-text("operators-own")');
    expect(await row('admins-own')).not.toBeNull();
    expect(await row('operators-own')).toBeNull();
    await page.goto(`${c.server.url}/schedules/${byOp.id}`);
    await page.click('[data-test=schedule-delete]');
    await page.click('.n-dialog .n-button:has-text("Cancel")');
    expect((await c.api.get(`/api/schedules/${byOp.id}`)).status).toBe(200);
    await page.click('[data-test=schedule-delete]');
    await page.click('.n-dialog .n-button:has-text("Delete")');
    await page.waitForURL(/\/schedules$/);
    expect((await c.api.get(`/api/schedules/${byOp.id}`)).status).toBe(404);

    await page.goto(`${c.server.url}/tokens`);
    await page.click('[data-test=token-scope]');
    await page.waitForSelector('.n-base-select-option:has-text("operator")');
    expect(await page.$('.n-base-select-option:has-text("admin")')).toBeNull();
    expect(page.problems).toEqual([]);
  });
});
