/**
 * Terminal file transfer in a real browser with a real agent: a file dropped onto the terminal
 * (a synthetic drop event carrying a DataTransfer) lands with its content in the shell's current
 * directory; "Download" hands the browser the bytes of a path; a path outside the host policy's
 * allowedPaths is refused with the reason shown.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { tmpDir, waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

const termText = (page: Page) =>
  page.$$eval('[data-test=terminal] .xterm-rows', (els) => els.map((e) => (e as unknown as { innerText: string }).innerText).join('\n'));

/** Dispatches dragover + drop of one file onto the terminal, as a file dragged from the desktop would. */
const dropFile = (page: Page, name: string, text: string) =>
  page.evaluate(`(() => {
  const dt = new DataTransfer();
  dt.items.add(new File([${JSON.stringify(text)}], ${JSON.stringify(name)}, { type: 'text/plain' }));
  const target = document.querySelector('[data-test=terminal]');
  target.dispatchEvent(new DragEvent('dragover', { bubbles: true, cancelable: true, dataTransfer: dt }));
  target.dispatchEvent(new DragEvent('drop', { bubbles: true, cancelable: true, dataTransfer: dt }));
})()`);

describe.skipIf(!browserAvailable())('console: terminal file transfer', () => {
  let inside: string;
  let outside: string;

  const c = useConsole({
    agents: () => {
      inside = fs.realpathSync(tmpDir('e2e-xfer-in'));
      outside = fs.realpathSync(tmpDir('e2e-xfer-out'));
      fs.writeFileSync(path.join(outside, 'secret.txt'), 'outside');
      const policy = path.join(tmpDir('e2e-xfer-policy'), 'policy.json');
      fs.writeFileSync(policy, JSON.stringify({ allowedPaths: [inside] }), { mode: 0o600 });
      return [{ name: 'xfer-e2e', args: ['--policy', policy] }];
    },
  });

  it('uploads a dropped file into the cwd, downloads a path, and shows a policy refusal', async () => {
    const page = await c.signedIn(`/agents/${c.id}`);
    await page.click('[data-test=open-terminal]');
    await page.waitForSelector('[data-test=terminal][data-state=open]');
    await page.click('[data-test=terminal]');
    await page.keyboard.type(`cd '${inside}' && echo "in-$((2+2))"\n`);
    await waitFor(async () => (await termText(page)).includes('in-4'), 'cd done', STEP_MS);

    await dropFile(page, 'dropped.txt', 'dropped by the browser\n');
    await waitFor(
      async () => (await textOf(page, '[data-test=transfer-status]'))?.includes(`uploaded ${path.join(inside, 'dropped.txt')}`),
      'upload reported',
      STEP_MS,
    );
    expect(fs.readFileSync(path.join(inside, 'dropped.txt'), 'utf8')).toBe('dropped by the browser\n');
    await page.click('[data-test=terminal]');
    await page.keyboard.type('cat dropped.txt\n');
    await waitFor(async () => /^dropped by the browser\s*$/m.test(await termText(page)), 'the shell sees the file', STEP_MS);
    await screenshot(page, 'terminal-upload');

    fs.writeFileSync(path.join(inside, 'report.csv'), 'a,b\n1,2\n');
    await page.fill('[data-test=download-path] input', 'report.csv');
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: STEP_MS }), page.click('[data-test=download]')]);
    expect(dl.suggestedFilename()).toBe('report.csv');
    expect(fs.readFileSync((await dl.path())!, 'utf8')).toBe('a,b\n1,2\n');
    await waitFor(async () => (await textOf(page, '[data-test=transfer-status]'))?.includes('downloaded'), 'download reported', STEP_MS);

    await page.fill('[data-test=download-path] input', path.join(outside, 'secret.txt'));
    await page.click('[data-test=download]');
    await waitFor(
      async () => (await textOf(page, '[data-test=transfer-status]'))?.includes("outside the host policy's allowedPaths"),
      'policy refusal shown',
      STEP_MS,
    );
    expect(await page.getAttribute('[data-test=transfer-status]', 'class')).toContain('bad');

    const audit = (await c.api.get('/api/audit?action=terminal.upload')).body.items;
    expect(audit.some((e: any) => e.ok && e.details.path === path.join(inside, 'dropped.txt') && e.details.size === 23)).toBe(true);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
