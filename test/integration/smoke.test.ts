import { afterAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, startAgent, startServer } from '../helpers/harness.js';

describe('smoke', () => {
  afterAll(cleanup);
  it('server starts, agent registers, admin sees it', async () => {
    const s = await startServer();
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'smoke-1', labels: { role: 'web' } });
    const id = await agentId(a);
    const view = await api.waitAgent(id, 'online');
    expect(view.name).toBe('smoke-1');
    expect(view.labels).toEqual({ role: 'web' });
  });
});
