import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, consoleSocket, startAgent, startServer } from '../helpers/harness.js';

describe('console pushes for operator changes', () => {
  afterAll(cleanup);

  it('a label patch and a revoke reach every open console as agent.changed', async () => {
    const s = await startServer();
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'push-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const other = await consoleSocket(s, await Api.login(s.url));

    expect((await api.patch(`/api/agents/${id}`, { labels: { tier: 'gold' }, groups: ['canary'] })).status).toBe(200);
    const changed = await other.next((m) => m.type === 'agent.changed' && m.agent.id === id, 10_000, 'agent.changed after patch');
    expect(changed.agent.labels).toEqual({ tier: 'gold' });
    expect(changed.agent.groups).toEqual(['canary']);

    expect((await api.delete(`/api/agents/${id}`)).status).toBe(204);
    await other.next((m) => m.type === 'agent.changed' && m.agent.id === id && m.agent.revoked === true, 10_000, 'agent.changed after revoke');
    other.close();
  });
});
