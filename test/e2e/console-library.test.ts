/**
 * The console's script library: a saved script with parameters, its versions and their line diff,
 * and a run from the generated form whose quoting-hostile value reaches a real agent literally.
 */
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outputText, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, startAgent, startServer, type TestServer } from '../helpers/harness.js';
import { browserAvailable, launch, newPage, screenshot, signIn } from './browser.js';

describe.skipIf(!browserAvailable())('console: script library', () => {
  let server: TestServer;
  let api: Api;
  let browser: Browser;

  beforeAll(async () => {
    server = await startServer();
    api = await Api.login(server.url);
    await api.waitAgent(await agentId(startAgent(server, { name: 'lib-e2e' })), 'online');
    browser = await launch();
  });
  afterAll(async () => {
    await browser?.close();
    await cleanup();
  });

  it('shows versions and their diff, and runs a version from the generated form', async () => {
    const created = await api.post('/api/scripts', {
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
    const v2 = await api.req('PUT', `/api/scripts/${created.body.id}`, { body: 'printf "hello [%s] loud=%s\\n" "$MUSTER_PARAM_WHO" "$MUSTER_PARAM_LOUD"\n' });
    expect(v2.body.version).toBe(2);

    const page = await newPage(browser);
    await signIn(page, server.url, 'admin', 'admin-password-123', '/library');
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
    const t = await waitTask(api, taskId);
    expect(t).toMatchObject({ status: 'succeeded', scriptId: created.body.id, scriptVersion: 2 });
    expect(await outputText(api, t.executions[0].id)).toBe(`hello [${value}] loud=true\n`);
    expect(page.problems).toEqual([]);
  });
});
