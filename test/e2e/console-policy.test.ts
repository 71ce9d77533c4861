/**
 * The console shows each host's own policy on the agent page and disables what the host forbids
 * (terminal, run), with the reason as a tooltip; the terminal picker lists such agents as disabled.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentId, startAgent, tmpDir } from '../helpers/harness.js';
import { browserAvailable, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: host policy', () => {
  const c = useConsole();

  it('shows the policy and disables the terminal and run buttons the host forbids', async () => {
    const file = path.join(tmpDir('policy'), 'policy.json');
    fs.writeFileSync(file, JSON.stringify({ terminals: false, exec: false, runAs: 'nobody' }), { mode: 0o600 });
    const locked = startAgent(c.server, { name: 'locked-01', args: ['--policy', file] });
    const open = startAgent(c.server, { name: 'open-01', args: ['--policy', path.join(tmpDir('nopolicy'), 'absent.json')] });
    const [lockedId, openId] = await Promise.all([agentId(locked), agentId(open)]);
    await c.api.waitAgent(lockedId, 'online');
    await c.api.waitAgent(openId, 'online');

    const page = await c.signedIn(`/agents/${lockedId}`);
    const card = await page.waitForSelector('[data-test=agent-policy]', { timeout: STEP_MS });
    expect(await card.textContent()).toContain(file);
    expect(await page.textContent('[data-test=policy-terminals]')).toBe('disabled');
    expect(await page.textContent('[data-test=policy-exec]')).toBe('disabled');
    expect(await card.textContent()).toContain('nobody');
    expect(await page.isDisabled('[data-test=open-terminal]')).toBe(true);
    expect(await page.isDisabled('[data-test=agent-run]')).toBe(true);
    await page.hover('[data-test=open-terminal]', { force: true });
    await page.waitForSelector('text=terminals are disabled by host policy', { timeout: STEP_MS });

    await page.goto(`${c.server.url}/agents/${openId}`);
    await page.waitForSelector('[data-test=agent-policy]:has-text("default")', { timeout: STEP_MS });
    expect(await page.isDisabled('[data-test=open-terminal]')).toBe(false);
    expect(await page.isDisabled('[data-test=agent-run]')).toBe(false);
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
