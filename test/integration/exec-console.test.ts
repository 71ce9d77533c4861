import { afterAll, describe, expect, it } from 'vitest';
import { decodeFrame } from '../../protocol/index.js';
import { createTask, outputRaw, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, consoleSocket, databases, startAgent, startServer } from '../helpers/harness.js';

const dbs = await databases();

describe.each(dbs)('exec live output to consoles (%s)', (db) => {
  afterAll(cleanup);

  it('a subscribed console gets EXEC_OUTPUT frames as they are produced, and execution updates', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'c-1' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const c = await consoleSocket(s, api);
    await c.next((m) => m.type === 'ready');
    const t = await createTask(api, {
      script: 'sleep 1; for i in $(seq 1 20); do echo "live $i"; echo "warn $i" >&2; sleep 0.05; done',
      targets: { agentIds: [id] },
    });
    c.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: t.id }));
    await c.next((m) => m.type === 'task.updated' && m.task.id === t.id);
    const ex = await c.next((m) => m.type === 'execution.updated' && m.execution.status === 'succeeded', 20_000, 'succeeded');
    const frames = c.binary.map((b) => decodeFrame(new Uint8Array(b)));
    const text = (stream: string) =>
      Buffer.concat(frames.filter((f) => f.op === 'execOutput' && f.stream === stream).map((f) => Buffer.from(f.data))).toString();
    expect(text('stdout')).toBe(Array.from({ length: 20 }, (_, i) => `live ${i + 1}\n`).join(''));
    expect(text('stderr')).toBe(Array.from({ length: 20 }, (_, i) => `warn ${i + 1}\n`).join(''));
    const seqs = frames.map((f) => (f.op === 'execOutput' ? f.seq : -1));
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(frames.every((f) => f.op === 'execOutput' && f.executionId === ex.execution.id)).toBe(true);
    // Unsubscribed: no more frames.
    c.ws.send(JSON.stringify({ type: 'task.unsubscribe', taskId: t.id }));
    c.close();
  });

  it('a console that stops reading is skipped ahead with exec.gap; the agent is not slowed', async () => {
    const s = await startServer({ db, env: { MUSTER_MAX_OUTPUT_BYTES: String(64 << 20) } });
    const api = await Api.login(s.url);
    const a = startAgent(s, { name: 'c-slow' });
    const id = await agentId(a);
    await api.waitAgent(id, 'online');
    const c = await consoleSocket(s, api);
    await c.next((m) => m.type === 'ready');
    const t = await createTask(api, { script: 'sleep 1; head -c 40000000 /dev/zero | tr "\\0" "y"', targets: { agentIds: [id] } });
    c.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: t.id }));
    await c.next((m) => m.type === 'task.updated' && m.task.id === t.id);
    // Stop reading the socket: the server's send buffer for this console fills up.
    (c.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const d = await waitTask(api, t.id, 60_000);
    expect(d.executions[0].status).toBe('succeeded');
    expect(d.executions[0].outputBytes).toBe(40_000_000);
    (c.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    const gap = await c.next((m) => m.type === 'exec.gap', 20_000, 'exec.gap');
    expect(gap.executionId).toBe(d.executions[0].id);
    expect(gap.toSeq).toBeGreaterThan(gap.fromSeq);
    await c.next((m) => m.type === 'execution.updated' && m.execution.status === 'succeeded', 20_000);
    const received = c.binary.reduce((n, b) => n + b.length, 0);
    expect(received).toBeLessThan(40_000_000);
    expect((await outputRaw(api, d.executions[0].id)).length).toBe(40_000_000);
  });

  it('subscribing to an unknown task answers an error', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    const c = await consoleSocket(s, api);
    c.ws.send(JSON.stringify({ type: 'task.subscribe', taskId: 'nope' }));
    const e = await c.next((m) => m.type === 'error');
    expect(e.code).toBe('not_found');
  });
});
