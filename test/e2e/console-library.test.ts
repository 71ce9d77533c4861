/**
 * The console's script library: a saved script with parameters, its versions and their line diff,
 * and a run from the generated form whose quoting-hostile value reaches a real agent literally.
 */
import { describe, expect, it } from 'vitest';
import { outputText, waitTask } from '../helpers/exec.js';
import { browserAvailable, screenshot } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: script library', () => {
  const c = useConsole({ agents: [{ name: 'lib-e2e' }] });

  it('shows versions and their diff, and runs a version from the generated form', async () => {
    const created = await c.api.post('/api/scripts', {
      name: 'greet',
      description: 'says hello',
      tags: ['demo'],
      body: 'echo "hello"\n',
      params: [
        { name: 'who', type: 'string', required: true, help: 'whom to greet' },
        { name: 'loud', type: 'boolean', default: false },
      ],
    });
    expect(created.status).toBe(201);
    const v2 = await c.api.req('PUT', `/api/scripts/${created.body.id}`, { body: 'printf "hello [%s] loud=%s\\n" "$MUSTER_PARAM_WHO" "$MUSTER_PARAM_LOUD"\n' });
    expect(v2.body.version).toBe(2);

    const page = await c.signedIn('/library');
    await page.waitForSelector('[data-test=library-list] :text("greet")');
    await page.click('[data-test=library-list] :text("greet")');
    await page.waitForURL(/\/library\/[^/]+$/);
    await page.waitForSelector('[data-test=params-editor] [data-test=param-1]');
    await page.click('.n-tabs-tab:has-text("Versions")');
    await page.waitForSelector('[data-test=library-diff] .del:has-text("echo \\"hello\\"")');
    await page.waitForSelector('[data-test=library-diff] .add:has-text("printf")');
    await screenshot(page, 'library-diff');

    await page.click('.n-tabs-tab:has-text("Run")');
    const value = `it's "$(id)"; rm -rf /`;
    await page.fill('[data-test=run-param-who] input', value);
    await page.click('[data-test=run-param-loud]');
    await page.fill('[data-test=run-form] .selector input', 'lib-e2e');
    await page.waitForSelector('[data-test=library-run]:has-text("1 agent")');
    await screenshot(page, 'library-run');
    await page.click('[data-test=library-run]');
    await page.waitForURL(/\/tasks\/[^/]+$/);
    const taskId = page.url().split('/').pop()!;
    const t = await waitTask(c.api, taskId);
    expect(t).toMatchObject({ status: 'succeeded', scriptId: created.body.id, scriptVersion: 2 });
    expect(await outputText(c.api, t.executions[0].id)).toBe(`hello [${value}] loud=true\n`);
    expect(page.problems).toEqual([]);
  });
});
