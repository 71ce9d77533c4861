/**
 * Running a script from the console on two real agents: select them in the agents table, write the
 * script in the editor, run, and watch live output and exit codes in the run view.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir, waitFor } from '../helpers/harness.js';
import { agentRow, browserAvailable, screenshot, STEP_MS, textOf } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: run a script', () => {
  // The scripts wait for a file here before finishing, so the test sees them running first.
  const gate = tmpDir('e2e-gate');
  // The agents' environment reaches the script: one exits 0, the other 7.
  const c = useConsole({
    agents: [
      { name: 'run-a', env: { E2E_EXIT: '0', E2E_GATE: gate } },
      { name: 'run-b', env: { E2E_EXIT: '7', E2E_GATE: gate } },
    ],
  });
  const ids = c.ids;

  it('runs on two selected agents and shows live output and exit codes', async () => {
    const page = await c.signedIn('/agents');
    for (const id of ids) await page.check(`${agentRow(id)} input[type=checkbox]`);
    await page.waitForSelector('[data-test=selected-count]:has-text("2 selected")');
    await page.click('[data-test=batch-run]');
    await page.waitForSelector('[data-test=script-editor] .cm-content');
    await page.click('[data-test=script-editor] .cm-content');
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    // A completion offered (shell keywords) is taken with Tab; Enter still ends the line.
    await page.keyboard.type('whil');
    await page.waitForSelector('.cm-tooltip-autocomplete');
    await page.keyboard.press('Enter');
    await page.keyboard.type('x');
    expect(await textOf(page, '[data-test=script-editor] .cm-content')).toBe('whilx');
    expect(await page.$$eval('[data-test=script-editor] .cm-line', (ls) => ls.length)).toBe(2);
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    // Typed line by line: the editor auto-indents, so no leading spaces.
    const script =
      'echo "start $((20+22))"\necho "warn-$E2E_EXIT" >&2\nwhile [ ! -e "$E2E_GATE/go" ]; do sleep 0.1; done\necho "done-$E2E_EXIT"\nexit $E2E_EXIT\n';
    await page.keyboard.type(script);
    expect(await page.textContent('[data-test=run-target-count]')).toContain('2 agents');
    await screenshot(page, 'run-script');
    await page.click('[data-test=run-submit]');
    await page.waitForURL(/\/tasks\/[^/]+$/);
    // The task runs exactly what was typed: Enter ends a line even while a completion is offered
    // (it once accepted the completion instead, joining `done` and the next line).
    expect((await c.api.get<{ script: string }>(`/api/tasks/${new URL(page.url()).pathname.split('/').pop()}`)).body.script).toBe(script);
    await page.waitForSelector('tr[data-exec-agent="run-a"][data-status=running]');
    await page.waitForSelector('tr[data-exec-agent="run-b"][data-status=running]');
    expect(await page.textContent('[data-test=task-meta]')).toContain('2 agents');
    // Without a click, the first running host's output is open and streams before the script ends.
    await waitFor(
      async () => (await textOf(page, '[data-test=exec-output] .xterm-rows'))?.includes('start 42'),
      'live output of run-a, opened by itself',
      STEP_MS,
    );
    expect(await page.getAttribute('[data-test=exec-output]', 'data-execution')).toBe(await page.getAttribute('tr[data-exec-agent="run-a"]', 'data-exec-id'));
    expect(await page.getAttribute('tr[data-exec-agent="run-a"]', 'data-status')).toBe('running');
    // stderr is drawn in red (xterm's palette colour 1), stdout in the default colour, in the script's order.
    await page.waitForSelector('[data-test=exec-output] .xterm-rows span.xterm-fg-1:has-text("warn-0")');
    expect(await page.$('[data-test=exec-output] .xterm-rows span.xterm-fg-1:has-text("start 42")')).toBeNull();
    const rows = (await textOf(page, '[data-test=exec-output] .xterm-rows')) ?? '';
    expect(rows.indexOf('start 42')).toBeLessThan(rows.indexOf('warn-0'));
    // The byte count is live: it shows the bytes received while the script still runs ("start 42\n" + "warn-0\n").
    await waitFor(async () => (await textOf(page, 'tr[data-exec-agent="run-a"] [data-test=exec-bytes]')) === '16 B', 'live byte count of run-a', STEP_MS);
    fs.writeFileSync(path.join(gate, 'go'), '');
    await page.waitForSelector('tr[data-exec-agent="run-a"][data-status=succeeded]');
    await page.waitForSelector('tr[data-exec-agent="run-b"][data-status=failed]');
    // When a host fails, its output is the one shown (run-b's), with the stored output in order and stderr red.
    await waitFor(
      async () => (await textOf(page, '[data-test=exec-output] .xterm-rows'))?.includes('done-7'),
      "the failed host's output, opened by itself",
      STEP_MS,
    );
    expect(await page.getAttribute('[data-test=exec-output]', 'data-execution')).toBe(await page.getAttribute('tr[data-exec-agent="run-b"]', 'data-exec-id'));
    await page.waitForSelector('[data-test=exec-output] .xterm-rows span.xterm-fg-1:has-text("warn-7")');
    // Opening a row by hand takes over from the automatic choice.
    // (The table is virtual: run-b's output, pushed down by run-a's, may leave the rendered window,
    // so run-a's own output is what is looked for, not a count of open outputs.)
    const runA = await page.getAttribute('tr[data-exec-agent="run-a"]', 'data-exec-id');
    await page.click('tr[data-exec-agent="run-a"] .n-data-table-expand-trigger');
    await waitFor(
      async () => (await textOf(page, `[data-test=exec-output][data-execution="${runA}"] .xterm-rows`))?.includes('done-0'),
      'run-a output opened by hand, all of it',
      STEP_MS,
    );
    expect(await page.textContent('tr[data-exec-agent="run-a"] [data-test=exec-exit]')).toBe('0');
    expect(await page.textContent('tr[data-exec-agent="run-b"] [data-test=exec-exit]')).toBe('7');
    await page.waitForSelector('[data-test=task-status]:has-text("failed")');
    // Different outputs: two groups; the histogram names both exit codes.
    await waitFor(async () => (await page.$$('[data-test=output-group]')).length === 2, 'two output groups', STEP_MS);
    expect(await page.textContent('[data-test=task-run]')).toContain('exit 7');
    // Exit-code bars are coloured by outcome: green for exit 0, red for a failure.
    expect(
      await page.$eval(
        '[data-test=exit-bars] [data-bar="exit 0"] .fill',
        (el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor,
      ),
    ).toBe('rgb(24, 160, 88)');
    expect(
      await page.$eval(
        '[data-test=exit-bars] [data-bar="exit 7"] .fill',
        (el) => (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(el).backgroundColor,
      ),
    ).toBe('rgb(208, 48, 80)');
    expect(await page.textContent('[data-test=task-rerun-failed]')).toBe('Re-run on the 1 that failed');
    await screenshot(page, 'task-run');
    // Re-run on the failed one makes a new task with one execution.
    const first = page.url();
    await page.click('[data-test=task-rerun-failed]');
    await page.waitForURL((u) => u.toString() !== first && /\/tasks\/[^/]+$/.test(u.pathname));
    // The re-run finishes at once (the gate is open), often before the view has subscribed to it.
    await page.waitForSelector('tr[data-exec-agent="run-b"][data-status=failed]');
    await waitFor(async () => (await page.$$('tr[data-exec-agent]')).length === 1, 'one execution in the re-run', STEP_MS);
    expect(await page.textContent('[data-test=task-meta]')).toContain('· 1 agent');
    expect(await page.textContent('[data-test=task-meta]')).not.toContain('1 agents');
    expect(await page.$('tr[data-exec-agent="run-a"]')).toBeNull();
    await page.goto(`${c.server.url}/tasks`);
    await waitFor(async () => (await page.$$('[data-test=task-link]')).length === 2, 'two tasks in history', STEP_MS);
    // The host's timeline lists its executions next to its connections.
    await page.goto(`${c.server.url}/agents/${ids[0]}`);
    await page.waitForSelector('[data-test=agent-timeline] >> text=execution succeeded (exit 0)');
    await page.waitForSelector('[data-test=agent-timeline] >> text=connected');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
