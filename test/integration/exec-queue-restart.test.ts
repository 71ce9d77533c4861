/**
 * A queued execution (offline: "queue") for an agent that is away survives a server restart and
 * runs when the agent comes back (regression: loaded pending executions were never dispatched).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createTask, outputText, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, databases, startAgent, startServer, tmpDir } from '../helpers/harness.js';

const dbs = await databases();

describe.each(dbs)('exec queue across a server restart (%s)', (db) => {
  afterAll(cleanup);

  it('runs a queued execution after the restart once its agent returns', async () => {
    let s = await startServer({ db });
    let api = await Api.login(s.url);
    const stateDir = tmpDir('queued-agent');
    const a = startAgent(s, { name: 'queued-1', stateDir });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    await a.stop();
    await api.waitAgent(id, 'offline', 30_000);
    const t = await createTask(api, { script: 'echo ran-after-restart', targets: { agentIds: [id] }, offline: 'queue' });
    expect(t.executions[0].status).toBe('pending');
    await s.stop();
    s = await s.restart();
    api = await Api.login(s.url);
    startAgent(s, { name: 'queued-1', stateDir });
    const d = await waitTask(api, t.id, 60_000);
    expect(d.status).toBe('succeeded');
    expect(await outputText(api, d.executions[0].id)).toBe('ran-after-restart\n');
  });
});
