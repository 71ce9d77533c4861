/**
 * The calendar of next runs (issue 13): GET /api/schedules/calendar merges the due times of every
 * enabled schedule in a window, soonest first, consistent with each schedule's own `nextFires`,
 * capped at MUSTER_SCHEDULE_CALENDAR_MAX_FIRES (`truncated`). SQLite and MariaDB.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, cleanup, databases, startServer, type TestServer } from '../helpers/harness.js';

const dbs = await databases();
const MAX = 30;
const HOUR = 3_600_000;
/** A Monday, in winter (Berlin is UTC+1). */
const MONDAY = Date.parse('2030-01-07T00:00:00Z');

describe.each(dbs)('schedule calendar (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  let viewer: Api;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    s = await startServer({ db, env: { MUSTER_SCHEDULE_CALENDAR_MAX_FIRES: String(MAX) } });
    api = await Api.login(s.url);
    viewer = await api.userWithRole('viewer');
    const script = await api.post('/api/scripts', { name: 'cal', body: 'true' });
    expect(script.status).toBe(201);
    const mk = async (name: string, timing: Record<string, unknown>, enabled = true) => {
      const r = await api.post('/api/schedules', { name, scriptId: script.body.id, selector: 'nothing-matches', enabled, ...timing });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids[name] = r.body.id;
      return r.body;
    };
    await mk('weekday-berlin', { cron: '30 9 * * 1-5', timeZone: 'Europe/Berlin' });
    await mk('noon-utc', { cron: '0 12 * * *', timeZone: 'UTC' });
    await mk('six-hourly', { intervalSec: 6 * 3600 });
    await mk('off', { cron: '* * * * *' }, false);
  });
  afterAll(cleanup);

  it('lists every enabled schedule’s due times in the window, soonest first, and no disabled one', async () => {
    const r = await viewer.get(`/api/schedules/calendar?from=${new Date(MONDAY).toISOString()}&days=2`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ from: '2030-01-07T00:00:00.000Z', to: '2030-01-09T00:00:00.000Z', truncated: false });
    const at = r.body.items.map((x: any) => Date.parse(x.at));
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    const of = (name: string) => r.body.items.filter((x: any) => x.name === name);
    expect(of('off')).toEqual([]);
    // 09:30 in Berlin is 08:30 UTC in January; Monday and Tuesday.
    expect(of('weekday-berlin').map((x: any) => x.at)).toEqual(['2030-01-07T08:30:00.000Z', '2030-01-08T08:30:00.000Z']);
    expect(of('noon-utc').map((x: any) => x.at)).toEqual(['2030-01-07T12:00:00.000Z', '2030-01-08T12:00:00.000Z']);
    expect(of('noon-utc')[0]).toMatchObject({ scheduleId: ids['noon-utc'], version: null, selector: 'nothing-matches' });
    // Every 6 hours from its creation: exactly 8 in 48 hours, 6 hours apart, inside the window.
    const six = of('six-hourly').map((x: any) => Date.parse(x.at));
    expect(six).toHaveLength(8);
    for (let i = 1; i < six.length; i++) expect(six[i] - six[i - 1]).toBe(6 * HOUR);
    expect(six[0]).toBeGreaterThanOrEqual(MONDAY);
    expect(six[7]).toBeLessThan(MONDAY + 48 * HOUR);
    expect(r.body.items).toHaveLength(12);

    // Saturday and Sunday: no weekday fires.
    const weekend = await viewer.get(`/api/schedules/calendar?from=${MONDAY + 5 * 24 * HOUR}&days=2`);
    expect(weekend.body.items.filter((x: any) => x.name === 'weekday-berlin')).toEqual([]);
  });

  it("from now, agrees with each schedule's next five fires", async () => {
    const r = await viewer.get('/api/schedules/calendar?days=3');
    expect(r.status).toBe(200);
    expect(r.body.truncated).toBe(false);
    for (const name of ['weekday-berlin', 'noon-utc', 'six-hourly']) {
      const sched = (await viewer.get(`/api/schedules/${ids[name]}`)).body;
      const listed = r.body.items.filter((x: any) => x.name === name).map((x: any) => x.at);
      const inWindow = sched.nextFires.filter((t: string) => t < r.body.to);
      expect(listed.slice(0, inWindow.length), name).toEqual(inWindow);
    }
    // Disabling takes a schedule off the calendar; enabling puts it back.
    expect((await api.req('PATCH', `/api/schedules/${ids['noon-utc']}`, { enabled: false })).status).toBe(200);
    expect((await viewer.get('/api/schedules/calendar?days=3')).body.items.some((x: any) => x.name === 'noon-utc')).toBe(false);
    expect((await api.req('PATCH', `/api/schedules/${ids['noon-utc']}`, { enabled: true })).status).toBe(200);
    expect((await viewer.get('/api/schedules/calendar?days=3')).body.items.some((x: any) => x.name === 'noon-utc')).toBe(true);
  });

  it('stops at MUSTER_SCHEDULE_CALENDAR_MAX_FIRES and says so; bad windows are 400; "calendar" is no schedule name', async () => {
    // A week: 5 + 7 + 28 = 40 fires, more than 30.
    const r = await viewer.get(`/api/schedules/calendar?from=${MONDAY}&days=7`);
    expect(r.status).toBe(200);
    expect(r.body.truncated).toBe(true);
    expect(r.body.items).toHaveLength(MAX);
    const at = r.body.items.map((x: any) => Date.parse(x.at));
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    // The first 30 of the 40, not any 30: nothing later than the 30th was listed in its place.
    const all = [...[0, 1, 2, 3, 4].map((d) => MONDAY + d * 24 * HOUR + 8.5 * HOUR), ...[0, 1, 2, 3, 4, 5, 6].map((d) => MONDAY + d * 24 * HOUR + 12 * HOUR)];
    const six = r.body.items.filter((x: any) => x.name === 'six-hourly').map((x: any) => Date.parse(x.at));
    for (let t = six[0]; t < MONDAY + 7 * 24 * HOUR; t += 6 * HOUR) all.push(t);
    all.sort((a, b) => a - b);
    expect(all).toHaveLength(40);
    expect(at).toEqual(all.slice(0, MAX));

    for (const q of ['days=0', 'days=32', 'days=x', 'from=yesterday']) {
      const x = await viewer.get(`/api/schedules/calendar?${q}`);
      expect(x.status, q).toBe(400);
      expect(x.body.error.code).toBe('bad_request');
    }
    expect((await fetch(`${s.url}/api/schedules/calendar`)).status).toBe(401);
    const named = await api.post('/api/schedules', { name: 'calendar', scriptId: 'cal', selector: 'all', intervalSec: 3600 });
    expect(named.status).toBe(400);
    expect(named.body.error.message).toMatch(/calendar/);
  });
});
