/**
 * Secret task environment values (issue 9): `env: {NAME: {value, secret: true}}` reaches the
 * script on a real agent, also on a re-run, but is never returned by the API (task detail, task
 * list, console pushes), audited or logged. Plain string values keep working.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, consoleSocket, startAgent, startServer, type TestServer } from '../helpers/harness.js';
import { createTask, outputText, waitTask } from '../helpers/exec.js';

const SECRET = 'pw-7f3a9c1e-not-for-logs';

describe('secret environment values', () => {
  let s: TestServer;
  let api: Api;
  let agent: string;
  let agentOutput: () => string;
  beforeAll(async () => {
    s = await startServer({ env: { MUSTER_LOG_LEVEL: 'debug' } });
    api = await Api.login(s.url);
    const a = startAgent(s, { name: 'secret-env', env: { MUSTER_AGENT_LOG_LEVEL: 'debug' } });
    agent = await agentId(a);
    agentOutput = a.output;
    await api.waitAgent(agent, 'online');
  });
  afterAll(cleanup);

  it('reaches the script (also on a re-run) and never comes back out', async () => {
    const sock = await consoleSocket(s, api);
    // The script proves it got the value by its hash (the script text itself is not secret).
    const script = 'printf %s "$DB_PASSWORD" | sha256sum | cut -c1-64; echo "plain=$PLAIN"';
    const expected = `${createHash('sha256').update(SECRET).digest('hex')}\nplain=visible\n`;
    const t = await createTask(api, {
      script,
      targets: { agentIds: [agent] },
      env: { PLAIN: 'visible', DB_PASSWORD: { value: SECRET, secret: true }, ALSO_PLAIN: { value: 'shown' } },
    });
    sock.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: t.id, output: false }));
    const done = await waitTask(api, t.id);
    expect(done.status).toBe('succeeded');
    expect(await outputText(api, done.executions[0].id)).toBe(expected);
    expect(done.env).toEqual({ PLAIN: 'visible', ALSO_PLAIN: 'shown' });
    expect(done.secretEnv).toEqual(['DB_PASSWORD']);

    const rr = await api.post(`/api/tasks/${t.id}/rerun`, { all: true });
    expect(rr.status).toBe(201);
    const again = await waitTask(api, rr.body.id);
    expect(await outputText(api, again.executions[0].id)).toBe(expected);
    expect(again.secretEnv).toEqual(['DB_PASSWORD']);

    const seen = [
      JSON.stringify(t),
      JSON.stringify(done),
      JSON.stringify(rr.body),
      JSON.stringify(again),
      JSON.stringify((await api.get('/api/tasks')).body),
      JSON.stringify((await api.get('/api/audit')).body),
      JSON.stringify(sock.messages),
      s.output(),
      agentOutput(),
    ];
    for (const text of seen) expect(text).not.toContain(SECRET);
    sock.close();
  });

  it('rejects a malformed env value with a 400', async () => {
    const r = await api.post('/api/tasks', { script: 'true', targets: { agentIds: [agent] }, env: { X: { value: 'a', secret: 'yes' } } });
    expect(r.status).toBe(400);
    const r2 = await api.post('/api/tasks', { script: 'true', targets: { agentIds: [agent] }, env: { X: { secret: true } } });
    expect(r2.status).toBe(400);
  });
});
