/**
 * The console's files page and live agent configuration, with a real server and two real agents:
 * a managed file created with its first revision uploaded from the browser, distributed in two
 * waves with both hosts seen `applied` live and the content checked on disk, a second revision,
 * a diff, a rollback from the page, drift shown after a local edit, what a viewer sees, delete;
 * then a configuration rule made in Admin reaching an agent, shown applied on its page with the
 * host policy's override named. The agents share this machine, so each resolves managed paths
 * under its own root (MUSTER_AGENT_FILE_ROOT).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tmpDir, waitFor } from '../helpers/harness.js';
import { browserAvailable, screenshot, STEP_MS } from './browser.js';
import { useConsole } from './fixture.js';

const DEST = '/etc/muster-e2e/app.conf';
const MAX = 1024 * 1024;

describe.skipIf(!browserAvailable())('console: files and agent configuration', () => {
  const roots: string[] = [];
  const onDisk = (i: number) => path.join(roots[i]!, DEST);
  const c = useConsole({
    server: { env: { MUSTER_FILE_MAX_BYTES: String(MAX) } },
    agents: () => {
      const policy = path.join(tmpDir('policy'), 'policy.json');
      fs.writeFileSync(policy, JSON.stringify({ allowedPaths: ['/etc/muster-e2e'], terminalIdleTimeoutMaxSec: 60 }), { mode: 0o600 });
      return [1, 2].map((n) => {
        const root = tmpDir(`root${n}`);
        roots.push(root);
        return {
          name: `files-e2e-${n}`,
          labels: { grp: 'fe2e' },
          args: ['--policy', policy],
          env: { MUSTER_AGENT_FILE_ROOT: root, MUSTER_AGENT_FILE_CHECK_SEC: '0.5' },
        };
      });
    },
  });

  const v1 = Buffer.from('listen 80;\n# revision one\n');
  const v2 = Buffer.from('listen 8080;\n# revision two\n');
  const contentIs = (want: Buffer, what: string) =>
    waitFor(() => [0, 1].every((i) => fs.existsSync(onDisk(i)) && fs.readFileSync(onDisk(i)).equals(want)), what, STEP_MS);

  it("uploads, distributes to two agents (applied live, on disk), diffs, rolls back, shows drift; viewers only look; delete keeps the hosts' copy", async () => {
    const page = await c.signedIn('/files');
    await page.click('[data-test=file-new]');
    await page.fill('[data-test=file-path] input', DEST);
    await page.fill('[data-test=file-mode] input', '0640');
    await page.setInputFiles('[data-test=file-form-upload]', { name: 'app.conf', mimeType: 'text/plain', buffer: v1 });
    await page.click('[data-test=file-create]');
    await page.waitForURL(/\/files\/[0-9a-f-]{36}$/);
    const fileId = page.url().split('/').pop()!;
    await page.waitForSelector('[data-test=revisions-table] td:has-text("r1")');
    expect((await c.api.get(`/api/files/${fileId}`)).body).toMatchObject({ path: DEST, mode: 0o640, latestRevision: 1 });

    // Two waves of one host each, a 1 s soak and an approval between them (the form offers what the
    // API has): the page follows both to `applied` without a reload.
    await page.fill('[data-test=distribute-selector] [data-test=selector-input]', 'labels.grp == "fe2e"');
    await page.waitForSelector('[data-test=distribute-selector] [data-test=selector-count]:has-text("2 matches")');
    await page.fill('[data-test=distribute-waves] input', '1, 100%');
    await page.fill('[data-test=distribute-soak] input', '1');
    await page.click('[data-test=distribute-approval]');
    await page.click('[data-test=distribute-start]');
    await page.waitForSelector('[data-test=distribution-gates]:has-text("Between waves: 1 s soak, then an approval.")');
    await page.waitForSelector('[data-test=distribution-state]:has-text("awaiting_approval")');
    expect(await page.$$(`[data-test=distribution-target][data-state=applied]`)).toHaveLength(1);
    await page.click('[data-test=distribution-approve]');
    for (const id of c.ids) await page.waitForSelector(`[data-test=distribution-target][data-agent-id="${id}"][data-state=applied]`);
    await page.waitForSelector('[data-test=distribution-state]:has-text("succeeded")');
    for (const i of [0, 1]) {
      expect(fs.readFileSync(onDisk(i)).equals(v1)).toBe(true);
      expect(fs.statSync(onDisk(i)).mode & 0o7777).toBe(0o640);
    }
    const first = (await c.api.get(`/api/files/${fileId}/distributions`)).body.items[0];
    expect(first).toMatchObject({ revision: 1, state: 'succeeded', waveSpec: [1, '100%'], counts: { applied: 2 }, soakSeconds: 1, approval: true });

    // The size limit is shown, and a file over it is refused before anything is sent.
    await page.waitForSelector('[data-test=files] :text("Revisions up to 1.0 MiB")');
    expect((await c.api.get('/api/files')).body.maxBytes).toBe(MAX);
    await page.setInputFiles('[data-test=revision-file]', { name: 'big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(MAX + 1) });
    await page.waitForSelector('[data-test=upload-too-large]:has-text("MUSTER_FILE_MAX_BYTES")');
    expect(await page.isDisabled('[data-test=revision-upload]')).toBe(true);

    // A second revision, uploaded with progress, distributed, and compared with the first.
    await page.setInputFiles('[data-test=revision-file]', { name: 'app.conf', mimeType: 'text/plain', buffer: v2 });
    await page.click('[data-test=revision-upload]');
    await page.waitForSelector('[data-test=revisions-table] td:has-text("r2")');
    await page.waitForSelector('[data-test=distribute-start]:has-text("Distribute r2")');
    // The form keeps what was chosen last: this one runs without gates.
    await page.fill('[data-test=distribute-soak] input', '0');
    await page.click('[data-test=distribute-approval]');
    await page.click('[data-test=distribute-start]');
    await page.waitForSelector('[data-test=distribution-revision]:has-text("r2")');
    await page.waitForSelector('[data-test=distribution-state]:has-text("succeeded")');
    await contentIs(v2, 'revision 2 on both hosts');
    await page.click('[data-test=revision-diff]');
    const diff = await page.textContent('[data-test=revision-diff-text]');
    expect(diff).toContain('- listen 80;');
    expect(diff).toContain('+ listen 8080;');

    // Rollback is one action, confirmed first (Cancel does nothing).
    await page.waitForSelector('[data-test=file-rollback]:has-text("Roll back to r1")');
    await page.click('[data-test=file-rollback]');
    await page.click('.n-dialog .n-button:has-text("Cancel")');
    expect((await c.api.get(`/api/files/${fileId}/distributions`)).body.total).toBe(2);
    await page.click('[data-test=file-rollback]');
    await page.click('.n-dialog .n-button:has-text("Roll back")');
    await page.waitForSelector('[data-test=distribution-revision]:has-text("r1")');
    await page.waitForSelector('[data-test=distribution-state]:has-text("succeeded")');
    await contentIs(v1, 'rolled back to revision 1 on both hosts');
    const audit = (await c.api.get('/api/audit?limit=100')).body.items.map((x: any) => x.action);
    expect(audit).toContain('file.rollback');

    // A local edit on one host shows as drift.
    fs.writeFileSync(onDisk(0), 'edited by hand\n');
    await page.waitForSelector(`[data-test=file-host-state][data-state=drifted]`);
    await page.click('[data-test=file-drifted-only]');
    await waitFor(async () => (await page.$$('[data-test=file-host-state]')).length === 1, 'only the drifted host listed', STEP_MS);
    // Back to the top of the page for the screenshot (the clicks above scrolled it).
    await page.mouse.move(800, 400);
    await page.mouse.wheel(0, -20_000);
    await new Promise((r) => setTimeout(r, 300));
    await screenshot(page, 'files');

    // A viewer sees the file, its revisions, distributions and hosts, and no action.
    await c.api.userWithRole('viewer', 'files-viewer');
    const viewer = await c.signedIn(`/files/${fileId}`, { username: 'files-viewer', password: 'password-123' });
    await viewer.waitForSelector('[data-test=file-hosts] [data-test=file-host-state]');
    await viewer.waitForSelector('[data-test=distribution-state]');
    for (const sel of [
      'file-new',
      'file-edit',
      'file-delete',
      'file-rollback',
      'revision-upload',
      'revision-view',
      'distribute-form',
      'distribution-pause',
      'rollback-2',
    ]) {
      expect(await viewer.$(`[data-test=${sel}]`), sel).toBeNull();
    }
    expect(viewer.problems).toEqual([]);

    // Delete, choosing to leave the hosts' copies in place.
    await page.click('[data-test=file-delete]');
    await page.click('[data-test=delete-keep]');
    await page.click('[data-test=delete-confirm]');
    await page.waitForURL(/\/files$/);
    expect((await c.api.get(`/api/files/${fileId}`)).status).toBe(404);
    expect(fs.readFileSync(onDisk(1)).equals(v1)).toBe(true);
    expect(page.problems).toEqual([]);
  });

  it("a configuration rule made in Admin reaches the agents and shows applied on the agent page, with the host policy's override", async () => {
    const page = await c.signedIn('/admin?tab=agent-config');
    await page.fill('[data-test=config-rule-form] [data-test=selector-input]', 'labels.grp == "fe2e"');
    await page.waitForSelector('[data-test=config-rule-form] [data-test=selector-count]:has-text("2 matches")');
    await page.click('[data-test=config-log-level]');
    await page.click('.n-base-select-option:has-text("debug")');
    await page.fill('[data-test=config-idle] input', '3600');
    await page.fill('[data-test=config-labels] input', 'tier=gold');
    await page.fill('[data-test=config-description] input', 'e2e debugging');
    await page.click('[data-test=config-rule-save]');
    await page.waitForSelector('[data-test=config-rules-selector] :text("log level debug")');
    const rules = (await c.api.get('/api/agent-config')).body.rules;
    expect(rules).toHaveLength(1);
    expect(rules[0]).toMatchObject({
      selector: 'labels.grp == "fe2e"',
      description: 'e2e debugging',
      settings: { logLevel: 'debug', terminalIdleTimeoutSec: 3600, labels: { tier: 'gold' } },
    });

    await page.goto(`${c.server.url}/agents/${c.ids[0]!}`);
    await page.waitForSelector('[data-test=agent-config-logLevel] [data-test=config-effective]:has-text("debug")');
    await page.waitForSelector('[data-test=agent-config-state]:has-text("applied")');
    await page.waitForSelector('[data-test=agent-config-logLevel] [data-test=config-rule]:has-text("e2e debugging")');
    await page.waitForSelector('[data-test=agent-config-labels] [data-test=config-effective]:has-text("tier=gold")');
    // The host policy caps the idle timeout at 60 s: the page says the policy won.
    expect(await page.textContent('[data-test=agent-config-terminalIdleTimeoutSec] [data-test=config-effective]')).toBe('60 s');
    expect(await page.textContent('[data-test=agent-config-terminalIdleTimeoutSec] [data-test=config-policy]')).toMatch(/Host policy wins: limited to 60 s/);
    expect(await page.$('[data-test=agent-config-logLevel] [data-test=config-pending]')).toBeNull();
    const st = (await c.api.get(`/api/agents/${c.ids[0]!}/config`)).body;
    expect(st).toMatchObject({ state: 'applied', applied: { effective: { logLevel: 'debug', terminalIdleTimeoutSec: 60 } } });

    // Edited from the agent's page link: a rule for this agent overrides the selector's log level.
    await page.click('[data-test=agent-config-edit]');
    await page.waitForSelector('[data-test=config-agent] input');
    expect(await page.inputValue('[data-test=config-agent] input')).toBe(c.ids[0]!);
    await page.click('[data-test=config-log-level]');
    await page.click('.n-base-select-option:has-text("warn")');
    await page.click('[data-test=config-rule-save]');
    await page.waitForSelector('[data-test=config-rules-agent] :text("log level warn")');
    await page.goto(`${c.server.url}/agents/${c.ids[0]!}`);
    await page.waitForSelector('[data-test=agent-config-logLevel] [data-test=config-effective]:has-text("warn")');
    await page.waitForSelector('[data-test=agent-config-logLevel] [data-test=config-rule]:has-text("agent itself")');
    expect(page.problems).toEqual([]);
  });
});
