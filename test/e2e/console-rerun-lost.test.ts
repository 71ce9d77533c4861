/**
 * Re-running failed executions from the console when some are `lost` (issue 10, defect 1): the
 * console asks first, because a lost execution's agent never said whether the script ran.
 */
import { describe, expect, it } from 'vitest';
import { createTask, waitExecution, waitTask } from '../helpers/exec.js';
import { agentId, startAgent } from '../helpers/harness.js';
import { browserAvailable } from './browser.js';
import { useConsole } from './fixture.js';

describe.skipIf(!browserAvailable())('console: re-run with lost executions', () => {
  const c = useConsole({ server: { env: { MUSTER_RECONCILE_TIMEOUT_SEC: '2' } } });

  it('asks before re-running lost executions, and re-runs only the others when told so', async () => {
    const a = startAgent(c.server, { name: 'rr-fail' });
    const b = startAgent(c.server, { name: 'rr-lost' });
    const [ia, ib] = [await agentId(a), await agentId(b)];
    await c.api.waitAgent(ia, 'online');
    await c.api.waitAgent(ib, 'online');
    const t = await createTask(c.api, { script: 'if [ "$MUSTER_AGENT_ID" = "$1" ]; then exit 2; fi; sleep 60', args: [ia], targets: { agentIds: [ia, ib] } });
    await waitExecution(c.api, t.id, (e) => e.agentId === ib && e.status === 'running', 'rr-lost running');
    await b.stop('SIGKILL');
    await waitTask(c.api, t.id);
    const page = await c.signedIn(`/tasks/${t.id}`);
    await page.waitForSelector('tr[data-exec-agent="rr-lost"][data-status=lost]');
    expect(await page.textContent('[data-test=task-rerun-failed]')).toContain('Re-run on the 2 that failed');
    await page.click('[data-test=task-rerun-failed]');
    await page.waitForSelector('.n-dialog >> text=may run it twice');
    const first = page.url();
    await page.click('.n-dialog button >> text=Only the other 1');
    await page.waitForURL((u) => u.toString() !== first && /\/tasks\/[^/]+$/.test(u.pathname));
    await page.waitForSelector('tr[data-exec-agent="rr-fail"]');
    expect(await page.$('tr[data-exec-agent="rr-lost"]')).toBeNull();
    expect(page.problems).toEqual([]);
    await page.context().close();
  });
});
