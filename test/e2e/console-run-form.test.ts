/**
 * The run form offers what POST /api/tasks takes: working directory, concurrency and max failures
 * (count or %), the offline queue with its TTL, environment with secret values, timeout; it starts
 * from a library script; the default script follows the interpreter, and a restored draft says so.
 */
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { outputText, waitTask } from '../helpers/exec.js';
import { tmpDir, waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

const editorText = (page: Page) => page.$eval('[data-test=script-editor] .cm-content', (el) => (el as unknown as { innerText: string }).innerText);
async function pick(page: Page, select: string, option: string) {
  await page.click(`[data-test=${select}]`);
  await page.click(`.n-base-select-option:has-text("${option}")`);
}

describe.skipIf(!browserAvailable())('console: the run form', () => {
  const c = useConsole({ agents: [{ name: 'form-a' }] });

  it('sends every option, keeps secrets write-only, follows the interpreter and says when a draft is restored', async () => {
    const page = await c.signedIn('/run');
    await page.waitForSelector('[data-test=script-editor] .cm-content');
    expect(await editorText(page)).toContain('hostname');
    expect(await page.$('[data-test=run-draft-restored]')).toBeNull();
    // The untouched default script follows the interpreter.
    await pick(page, 'interpreter', 'python3');
    await waitFor(async () => (await editorText(page)).includes('import os, platform'), 'python default script', STEP_MS);
    await pick(page, 'interpreter', 'sh');
    await waitFor(async () => (await editorText(page)).includes('uptime'), 'shell default script', STEP_MS);
    // A script of one's own stays when the interpreter changes; a #! line that disagrees is named.
    await page.click('[data-test=script-editor] .cm-content');
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.keyboard.type('#!/usr/bin/env python3\npwd\necho "conc=$MUSTER_TEST_PLAIN secret=$MUSTER_TEST_SECRET"\n');
    await pick(page, 'interpreter', 'bash');
    expect(await editorText(page)).toContain('#!/usr/bin/env python3');
    await page.waitForSelector('[data-test=run-shebang-mismatch]:has-text("names python3, but the script runs with bash")');

    const dir = tmpDir('run-cwd');
    await page.click('[data-test=run-more] .n-collapse-item__header');
    await page.fill('[data-test=run-cwd] input', dir);
    await page.fill('[data-test=run-concurrency] input', 'ten');
    await page.waitForSelector('[data-test=run-limit-problem]:has-text("concurrency must be a count")');
    expect(await page.isDisabled('[data-test=run-submit]')).toBe(true);
    await page.fill('[data-test=run-concurrency] input', '50%');
    await page.fill('[data-test=run-max-failures] input', '1');
    await page.click('[data-test=run-offline] :text("Queue until they connect")');
    await page.fill('[data-test=run-queue-ttl] input', '5');
    await page.click('[data-test=env-add]');
    await page.click('[data-test=env-add]');
    const rows = await page.$$('[data-test=env-row]');
    await (await rows[0]!.$('[data-test=env-name] input'))!.fill('MUSTER_TEST_PLAIN');
    await (await rows[0]!.$('[data-test=env-value] input'))!.fill('visible');
    await (await rows[1]!.$('[data-test=env-name] input'))!.fill('MUSTER_TEST_SECRET');
    await (await rows[1]!.$('[data-test=env-value] input'))!.fill('hunter2');
    await (await rows[1]!.$('[data-test=env-secret]'))!.click();
    await page.fill('[data-test=run-timeout] input', '120');
    await page.fill('.selector input', 'form-a');
    await page.waitForSelector('[data-test=run-target-count]:has-text("1 agent")');
    expect(await page.textContent('[data-test=run-target-count]')).not.toContain('agents');
    await screenshot(page, 'run-form');
    await page.click('[data-test=run-submit]');
    await page.waitForURL(/\/tasks\/[^/]+$/);
    const t = await waitTask(c.api, page.url().split('/').pop()!);
    expect(t).toMatchObject({
      status: 'succeeded',
      interpreter: 'bash',
      cwd: dir,
      concurrency: '50%',
      maxFailures: '1',
      offline: 'queue',
      queueTtlSec: 300,
      timeoutSec: 120,
      env: { MUSTER_TEST_PLAIN: 'visible' },
      secretEnv: ['MUSTER_TEST_SECRET'],
    });
    expect(JSON.stringify(t)).not.toContain('hunter2');
    expect(await outputText(c.api, t.executions[0].id)).toBe(`${dir}\nconc=visible secret=hunter2\n`);

    // Back on the form: the draft is restored and says so, without the secret value; Start over clears it.
    await page.goto(`${c.server.url}/run`);
    await page.waitForSelector('[data-test=run-draft-restored]:has-text("bash")');
    expect(await editorText(page)).toContain('#!/usr/bin/env python3');
    expect(await page.$$eval('[data-test=env-value] input', (els) => els.map((e) => (e as unknown as { value: string }).value))).toEqual(['visible']);
    await page.click('[data-test=run-start-over]');
    await waitFor(
      async () => (await editorText(page)).includes('uptime') && !(await editorText(page)).includes('python3'),
      'default script after start over',
      STEP_MS,
    );
    expect(await page.$('[data-test=run-draft-restored]')).toBeNull();
    expect(await page.$$('[data-test=env-row]')).toHaveLength(0);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('starts from a library script: its body, interpreter and parameters as MUSTER_PARAM_ variables', async () => {
    const s = await c.api.post('/api/scripts', {
      name: 'disk-report',
      interpreter: 'sh',
      body: 'df -h "$MUSTER_PARAM_PATH"\n',
      params: [{ name: 'path', type: 'string', default: '/' }],
    });
    expect(s.status).toBe(201);
    const page = await c.signedIn('/run');
    await pick(page, 'run-from-library', 'disk-report');
    await waitFor(async () => (await editorText(page)).includes('df -h'), 'library body in the editor', STEP_MS);
    expect(await page.textContent('[data-test=interpreter]')).toContain('sh');
    expect(await page.$$eval('[data-test=env-name] input', (els) => els.map((e) => (e as unknown as { value: string }).value))).toEqual(['MUSTER_PARAM_PATH']);
    expect(await page.$$eval('[data-test=env-value] input', (els) => els.map((e) => (e as unknown as { value: string }).value))).toEqual(['/']);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
