/**
 * The terminal view in a real browser: a real PTY on a real agent through the real server. Type a
 * command and see its output; reload and find the same session reattached; recordings play back.
 */
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

const termText = (page: Page) =>
  page.$$eval('[data-test=terminal] .xterm-rows', (els) => els.map((e) => (e as unknown as { innerText: string }).innerText).join('\n'));

describe.skipIf(!browserAvailable())('console: terminals', () => {
  // The harness gives the agent its own HOME and shell: the host's dotfiles never reach the test.
  const c = useConsole({ agents: [{ name: 'term-01' }] });

  it('opens a terminal, runs a command, reattaches after a reload, and plays the recording back', async () => {
    const page = await c.signedIn(`/agents/${c.id}`);
    await page.waitForSelector('[data-test=agent-timeline] >> text=connected');
    await screenshot(page, 'agent-detail');
    await page.click('[data-test=open-terminal]');
    await page.waitForSelector('[data-test=terminal][data-state=open]');
    const sessionId = await page.getAttribute('[data-test=terminal]', 'data-session');
    expect(sessionId).toBeTruthy();
    await page.click('[data-test=terminal]');
    await page.keyboard.type('echo "muster-$((6*7))"; tty\n');
    // Both lines of output: `tty`'s may arrive a frame after the echo's.
    await waitFor(async () => /muster-42[\s\S]*\/dev\/pts\/\d+/.test(await termText(page)), 'command output in the terminal', STEP_MS);
    await screenshot(page, 'terminal');

    await page.reload();
    await page.waitForSelector(`[data-test=terminal][data-session="${sessionId}"][data-state=open]`);
    // The scrollback is replayed, and the same shell keeps taking input.
    await waitFor(async () => (await termText(page)).includes('muster-42'), 'replayed scrollback after reload', STEP_MS);
    await page.click('[data-test=terminal]');
    await page.keyboard.type('echo "again-$((7*6))"\n');
    await waitFor(async () => (await termText(page)).includes('again-42'), 'output after reattach', STEP_MS);
    // Ctrl+Shift+V pastes the clipboard once (it used to arrive twice: ours and the browser's own).
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: c.server.url });
    await page.evaluate(
      (t) => (globalThis as unknown as { navigator: { clipboard: { writeText(s: string): Promise<void> } } }).navigator.clipboard.writeText(t),
      'echo "pasted-$((5*5))-"',
    );
    await page.keyboard.press('Control+Shift+KeyV');
    await waitFor(async () => (await termText(page)).includes('echo "pasted-$((5*5))-"'), 'pasted text echoed', STEP_MS);
    await page.keyboard.press('Enter');
    await waitFor(async () => (await termText(page)).includes('pasted-25-'), 'pasted command ran', STEP_MS);
    expect(await termText(page)).toMatch(/^pasted-25-\s*$/m);
    expect(await termText(page)).not.toContain('pasted-25-echo');
    // Leaving the view and coming back shows the same session with its scrollback.
    await page.click('text=Dashboard');
    await page.waitForSelector('[data-test=dashboard]');
    await page.click('text=Terminals');
    await page.waitForSelector(`[data-test=terminal][data-session="${sessionId}"][data-state=open]`);
    await waitFor(async () => (await termText(page)).includes('again-42'), 'scrollback after coming back to the view', STEP_MS);
    await page.click('[data-test=terminal]');
    const open = await c.api.get(`/api/terminals?status=open`);
    expect(open.body.items.map((s: { id: string }) => s.id)).toEqual([sessionId]);

    await page.keyboard.type('exit\n');
    await waitFor(async () => (await termText(page)).includes('[session ended'), 'session-ended message', STEP_MS);
    expect(await page.getAttribute('[data-test=terminal]', 'data-state')).toBe('closed');

    await page.goto(`${c.server.url}/recordings`);
    await page.click('[data-test=play-recording]');
    await page.waitForSelector('[data-test=cast-screen] .xterm-rows');
    await page.click('[data-test=cast-toggle]'); // pause
    await page.click('[data-test=cast-toggle]'); // play on
    await waitFor(
      async () => (await page.$eval('[data-test=cast-screen] .xterm-rows', (e) => (e as unknown as { innerText: string }).innerText)).includes('again-42'),
      'recording played back',
      STEP_MS,
    );
    await screenshot(page, 'recording');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('an admin watching a session sees its output with no blinking cursor and no paste hint', async () => {
    await c.api.userWithRole('operator', 'term-op');
    const op = await c.signedIn(`/agents/${c.id}`, { username: 'term-op', password: 'password-123' });
    await op.click('[data-test=open-terminal]');
    await op.waitForSelector('[data-test=terminal][data-state=open]');
    await op.click('[data-test=terminal]');
    // The operator's own (control) terminal blinks its cursor: the selector below is the real one.
    await waitFor(async () => (await op.$$('[data-test=terminal] .xterm-cursor-blink')).length > 0, 'blinking cursor in control mode', STEP_MS);
    expect(await op.textContent('.pane .bar')).toContain('Ctrl+Shift+V');

    const admin = await c.signedIn('/terminals');
    await admin.click('button:has-text("Watch")');
    await admin.waitForSelector('[data-test=terminal][data-mode=watch][data-state=open]');
    await op.keyboard.type('echo "watched-$((3*3))"\n');
    await waitFor(async () => (await termText(admin)).includes('watched-9'), 'output in the watching pane', STEP_MS);
    await admin.click('[data-test=terminal][data-mode=watch]');
    expect(await admin.$$('[data-test=terminal][data-mode=watch] .xterm-cursor-blink')).toHaveLength(0);
    const bar = await admin.textContent('.pane .bar');
    expect(bar).toContain('watching read-only');
    expect(bar).not.toContain('Ctrl+Shift+V');
    expect(op.problems).toEqual([]);
    expect(admin.problems).toEqual([]);
    await op.keyboard.type('exit\n');
    await op.context().close();
    await admin.context().close();
  });
});
