/**
 * Broadcast terminals in a real browser over real agents: a selector opens a grid of shells, a
 * command typed once runs in every pane, a pane that left the broadcast does not get it (and types
 * alone), and a selector matching more agents than MUSTER_BROADCAST_MAX_PANES is refused with the
 * limit named.
 */
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

/** Text of every pane of the grid, in order. */
const paneTexts = (page: Page) =>
  page.$$eval('[data-test=broadcast-pane]', (els) =>
    els.map((e) => {
      const rows = e.querySelector('.xterm-rows') as unknown as { innerText: string } | null;
      return rows?.innerText ?? '';
    }),
  );

describe.skipIf(!browserAvailable())('console: broadcast terminals', () => {
  const c = useConsole({ server: { env: { MUSTER_BROADCAST_MAX_PANES: '2' } }, agents: [{ name: 'bc-web-1' }, { name: 'bc-web-2' }, { name: 'bc-db-1' }] });

  it('types once into every pane; a pane that left does not receive it; the pane limit is refused', async () => {
    const page = await c.signedIn('/terminals');
    // The empty terminals view explains itself instead of looking like an error, and links here.
    await page.waitForSelector('[data-test=terminals-empty]:has-text("No terminal open yet")');
    await page.click('[data-test=broadcast-link]');
    await page.waitForSelector('[data-test=broadcast-empty]');

    // Three agents match `all`; the limit is 2: refused as a whole, with the limit named.
    await page.fill('[data-test=broadcast-selector] input', 'all');
    await page.click('[data-test=broadcast-open]');
    await page.waitForSelector('[data-test=broadcast-error]:has-text("at most 2 panes")');
    expect(await page.textContent('[data-test=broadcast-error]')).toContain('MUSTER_BROADCAST_MAX_PANES');
    expect(await page.$$('[data-test=broadcast-pane]')).toHaveLength(0);
    expect((await c.api.get('/api/terminals?status=open')).body.total).toBe(0);

    await page.fill('[data-test=broadcast-selector] input', 'name ~ "bc-web-*"');
    await page.click('[data-test=broadcast-open]');
    await waitFor(async () => (await page.$$('[data-test=broadcast-pane] [data-test=terminal][data-state=open]')).length === 2, 'two open panes', STEP_MS);
    expect(await page.$$('[data-test=broadcast-error]')).toHaveLength(0);
    const names = await page.$$eval('[data-test=broadcast-pane-name]', (els) => els.map((e) => e.textContent?.trim()));
    expect(names.sort()).toEqual(['bc-web-1', 'bc-web-2']);

    await page.click('[data-test=broadcast-pane] >> nth=0 >> [data-test=terminal]');
    await page.keyboard.type('echo "bc-$((6*7))"\n');
    await waitFor(async () => (await paneTexts(page)).every((t) => t.includes('bc-42')), 'the command ran in both panes', STEP_MS);
    await screenshot(page, 'terminal-broadcast');

    // Pane 2 leaves: what is typed in pane 1 reaches pane 1 only; pane 2 types alone.
    await page.click('[data-test=broadcast-pane] >> nth=1 >> [data-test=broadcast-join]');
    await page.waitForSelector('[data-test=broadcast-pane][data-joined="0"]');
    await page.click('[data-test=broadcast-pane] >> nth=0 >> [data-test=terminal]');
    await page.keyboard.type('echo "solo-$((5*5))"\n');
    await waitFor(async () => (await paneTexts(page))[0]!.includes('solo-25'), 'pane 1 ran its command', STEP_MS);
    await page.click('[data-test=broadcast-pane] >> nth=1 >> [data-test=terminal]');
    await page.keyboard.type('echo "p2-$((2*2))"\n');
    await waitFor(async () => (await paneTexts(page))[1]!.includes('p2-4'), 'pane 2 ran its own command', STEP_MS);
    const [t1, t2] = await paneTexts(page);
    expect(t2).not.toContain('solo');
    expect(t1).not.toContain('p2-');

    // Rejoined, it receives again.
    await page.click('[data-test=broadcast-pane] >> nth=1 >> [data-test=broadcast-join]');
    await waitFor(async () => (await page.$$('[data-test=broadcast-pane][data-joined="1"]')).length === 2, 'pane 2 rejoined', STEP_MS);
    await page.click('[data-test=broadcast-pane] >> nth=0 >> [data-test=terminal]');
    await page.keyboard.type('echo "again-$((3*3))"\n');
    await waitFor(async () => (await paneTexts(page)).every((t) => t.includes('again-9')), 'both panes after the rejoin', STEP_MS);

    await page.click('[data-test=broadcast-close]');
    await waitFor(async () => (await c.api.get('/api/terminals?status=open')).body.total === 0, 'sessions closed', STEP_MS);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });

  it('a viewer is told what the terminal views offer them', async () => {
    await c.api.userWithRole('viewer', 'bc-viewer');
    const page = await c.signedIn('/terminals', { username: 'bc-viewer', password: 'password-123' });
    const note = await page.textContent('[data-test=terminal-viewer-note]');
    expect(note).toContain('viewer');
    expect(note).toContain('operator role');
    expect(await page.$$('[data-test=terminal-open]')).toHaveLength(0);
    await page.goto(`${c.server.url}/terminals/broadcast`);
    await page.waitForSelector('[data-test=broadcast-view]:has-text("need the operator role")');
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
