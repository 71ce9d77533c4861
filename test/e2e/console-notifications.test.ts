/**
 * Admin → Notifications in a real browser: an admin adds a signed webhook rule pointing at a real
 * local receiver that fails once, sends a test, and sees the delivery recover ("500, 200").
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: notifications', () => {
  let receiver: http.Server;
  let url = '';
  const got: string[] = [];
  let failures = 1;

  const c = useConsole({
    server: async () => {
      receiver = http.createServer((req, res) => {
        let body = '';
        req.on('data', (d: Buffer) => {
          body += d.toString();
        });
        req.on('end', () => {
          got.push(body);
          if (failures-- > 0) res.writeHead(500).end('not yet');
          else res.writeHead(204).end();
        });
      });
      await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`;
      return { env: { MUSTER_NOTIFY_RETRY_BASE_MS: '100' } };
    },
    afterStop: () => new Promise((r) => receiver.close(r)),
  });

  it('adds a rule, sends a test, and shows each attempt of the delivery', async () => {
    const page = await c.signedIn();
    await page.goto(`${c.server.url}/admin`);
    await page.click('text=Notifications');
    await page.fill('[data-test=rule-name] input', 'ops-hook');
    await page.fill('[data-test=rule-url] input', url);
    await page.fill('input[placeholder^="signing secret"]', 'secret-0123456789abcdef');
    await page.click('[data-test=rule-create]');
    await page.waitForSelector('[data-test=notifications] td:has-text("ops-hook")');
    await page.click('[data-test=notifications] button:has-text("Test")');
    await waitFor(
      async () => {
        await page.click('[data-test=notifications] button:has-text("Refresh")');
        return page.$('[data-test=notifications] td:has-text("500, 204")');
      },
      'the recovered delivery in the table',
      STEP_MS,
      500,
    );
    expect(await page.textContent('[data-test=notifications]')).toContain('delivered');
    await screenshot(page, 'admin-notifications');
    expect(got).toHaveLength(2);
    expect(JSON.parse(got[1]!)).toMatchObject({ event: 'test', rule: { name: 'ops-hook' } });
    expect((await c.api.get('/api/notifications/rules')).body.items[0]).toMatchObject({ name: 'ops-hook', hasSecret: true, events: ['task.failed'] });
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
