import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AgentMessage, ExecutionView, ServerToAgent } from '../../protocol/index.js';
import type { Execution, Task } from '../../server/exec/model.js';
import { Scheduler, type SchedulerDeps } from '../../server/exec/scheduler.js';
import type { AgentRecord } from '../../server/fleet/repo.js';
import { createMetrics } from '../../server/metrics.js';
import { executionRow, taskRow } from '../helpers/exec-rows.js';

// The scheduler with a fake fleet, writer and repository: no server, no database, no sockets.
// The fleet is the edge here (which agents are online, what was sent to them).

const metrics = createMetrics();
const RECONCILE_MS = 60_000;

class FakeFleet {
  readonly online = new Set<string>();
  readonly sent: { agentId: string; msg: ServerToAgent }[] = [];
  /** Messages sent with their JSON text given (exec.run): that text, parsed. */
  readonly sentJson: unknown[] = [];
  readonly records = new Map<string, Pick<AgentRecord, 'policy' | 'lastSeenAt'>>();
  isOnline(id: string): boolean {
    return this.online.has(id);
  }
  send(agentId: string, msg: ServerToAgent, json?: string): boolean {
    if (!this.online.has(agentId)) return false;
    // A message serialized ahead (exec.run) must be exactly what serializing it here would give.
    if (json !== undefined) {
      expect(json).toBe(JSON.stringify(msg));
      this.sentJson.push(JSON.parse(json));
    }
    this.sent.push({ agentId, msg });
    return true;
  }
  get(id: string): AgentRecord | undefined {
    return this.records.get(id) as AgentRecord | undefined;
  }
  /** Execution ids sent in exec.run, in order. */
  runs(): string[] {
    return this.sent.flatMap((s) => (s.msg.type === 'exec.run' ? [s.msg.executionId] : []));
  }
  of(type: ServerToAgent['type']): ServerToAgent[] {
    return this.sent.filter((s) => s.msg.type === type).map((s) => s.msg);
  }
}

function setup(
  o: {
    maxPerAgent?: number;
    loaded?: { tasks: Task[]; executions: Execution[] };
    watched?: (e: Execution) => boolean;
    ownerNode?: string;
    fenced?: Set<string>;
    stored?: Map<string, number>;
  } = {},
) {
  const fleet = new FakeFleet();
  const stored: { taskId: string; patch: object }[] = [];
  const published: ExecutionView[] = [];
  const deps: SchedulerDeps = {
    repo: {
      updateTask: async (taskId, patch) => {
        if (o.fenced?.has(taskId)) return false;
        stored.push({ taskId, patch });
        return true;
      },
      loadActive: async () => o.loaded ?? { tasks: [], executions: [] },
      storedOutput: async (id) => ({ nextSeq: o.stored?.get(id) ?? 0, bytes: 0 }),
    },
    writer: { update: () => {}, output: () => {}, afterFlush: (fn) => fn() },
    fleet,
    bus: {
      publish: (topic, payload) => {
        if (topic === 'execution.updated') published.push((payload as { execution: ExecutionView }).execution);
      },
    },
    live: { output: () => {}, ended: () => {} },
    watched: o.watched ?? (() => true),
    log: pino({ level: 'silent' }),
    metrics,
    maxExecutionsPerAgent: o.maxPerAgent ?? 8,
    reconcileTimeoutMs: RECONCILE_MS,
    maxOutputBytes: 1 << 20,
    ...(o.ownerNode ? { ownerNode: o.ownerNode } : {}),
  };
  const s = new Scheduler(deps);
  return { s, fleet, stored, published };
}

let n = 0;
function task(o: Partial<Task> = {}): Task {
  n++;
  return { ...taskRow(0, 'x'), id: `t${n}`, script: 'true', interpreter: 'bash', targets: {}, createdBy: 'op', ...o };
}

function executions(t: Task, agents: string[], o: Partial<Execution> = {}): Execution[] {
  return agents.map((agentId, i) => ({ ...executionRow(t.id, i), id: `${t.id}-e${i}`, agentId, agentName: agentId, ...o }));
}

function result(
  executionId: string,
  status: AgentMessage<'exec.finished'>['status'],
  exitCode = status === 'succeeded' ? 0 : 1,
): AgentMessage<'exec.finished'> {
  return { type: 'exec.finished', executionId, status, exitCode, signal: null, startedAt: Date.now(), finishedAt: Date.now(), outputSeq: 0, truncated: false };
}

const agents = (k: number) => Array.from({ length: k }, (_, i) => `a${i}`);

describe('exec scheduler', () => {
  it('keeps at most `concurrency` executions in flight and moves the window as results come', () => {
    const { s, fleet } = setup();
    for (const a of agents(5)) fleet.online.add(a);
    const t = task({ concurrency: '2' });
    const ex = executions(t, agents(5));
    s.submit(t, ex);
    expect(fleet.runs()).toEqual([ex[0]!.id, ex[1]!.id]);
    expect(s.finished('a1', result(ex[1]!.id, 'succeeded'))).toBe(true);
    expect(fleet.runs()).toEqual([ex[0]!.id, ex[1]!.id, ex[2]!.id]);
    s.finished('a0', result(ex[0]!.id, 'succeeded'));
    s.finished('a2', result(ex[2]!.id, 'failed'));
    expect(fleet.runs()).toHaveLength(5);
    expect(s.view(t.id)?.counts).toMatchObject({ succeeded: 2, failed: 1, dispatched: 2 });
    s.finished('a3', result(ex[3]!.id, 'succeeded'));
    s.finished('a4', result(ex[4]!.id, 'succeeded'));
    expect(s.isActive(t.id)).toBe(false);
    expect(t.status).toBe('failed');
  });

  it('exec.run is serialized once per task: each agent gets the task with its own execution id, the same JSON as the message', () => {
    const { s, fleet } = setup();
    for (const a of agents(3)) fleet.online.add(a);
    const script = 'echo "quoted" \\ back\nline \u2028 ✓ \u0000 end';
    const t1 = task({ script, env: { A: '"x"' }, args: ['--a', 'b c'], cwd: '/tmp', signature: 'sig"1' });
    const t2 = task({ script: 'true' });
    const e1 = executions(t1, agents(3));
    const e2 = executions(t2, agents(2));
    s.submit(t1, e1);
    s.submit(t2, e2);
    // FakeFleet.send checks each text against JSON.stringify of the message object.
    expect(fleet.sentJson).toHaveLength(5);
    const runs = fleet.sentJson as Array<Record<string, unknown>>;
    expect(runs.map((m) => m['executionId'])).toEqual([...e1, ...e2].map((e) => e.id));
    expect(runs.slice(0, 3).every((m) => m['script'] === script && m['signature'] === 'sig"1' && m['taskId'] === t1.id)).toBe(true);
    expect(runs[3]).toEqual({
      type: 'exec.run',
      executionId: e2[0]!.id,
      taskId: t2.id,
      script: 'true',
      interpreter: 'bash',
      args: [],
      env: {},
      cwd: null,
      timeoutSec: 60,
    });
  });

  it('execution.updated is built only for executions someone follows, with the state after the change', () => {
    const watchedTasks = new Set<string>();
    const asked: string[] = [];
    const { s, fleet, published } = setup({
      watched: (e) => {
        asked.push(`${e.id}:${e.status}`);
        return watchedTasks.has(e.taskId) || e.status === 'failed';
      },
    });
    for (const a of agents(3)) fleet.online.add(a);
    const quiet = task();
    const followed = task();
    const eq = executions(quiet, agents(3));
    const ef = executions(followed, agents(3));
    watchedTasks.add(followed.id);
    s.submit(quiet, eq);
    s.submit(followed, ef);
    s.finished('a0', result(eq[0]!.id, 'succeeded'));
    s.finished('a1', result(eq[1]!.id, 'failed'));
    s.finished('a0', result(ef[0]!.id, 'succeeded'));
    // Asked with the new state of each change (dispatch, then the result).
    expect(asked).toContain(`${eq[0]!.id}:dispatched`);
    expect(asked).toContain(`${eq[0]!.id}:succeeded`);
    // The unwatched task: only its failure (a notification rule's state); the watched one: every change.
    expect(published.map((v) => `${v.id}:${v.status}`)).toEqual([
      `${ef[0]!.id}:dispatched`,
      `${ef[1]!.id}:dispatched`,
      `${ef[2]!.id}:dispatched`,
      `${eq[1]!.id}:failed`,
      `${ef[0]!.id}:succeeded`,
    ]);
    // A console that starts following later gets the changes from then on.
    watchedTasks.add(quiet.id);
    s.finished('a2', result(eq[2]!.id, 'succeeded'));
    expect(published.at(-1)).toMatchObject({ id: eq[2]!.id, status: 'succeeded', exitCode: 0 });
  });

  it('a percentage window is taken of the targets, and an agent runs at most its limit', () => {
    const { s, fleet } = setup({ maxPerAgent: 1 });
    for (const a of agents(4)) fleet.online.add(a);
    const t1 = task({ concurrency: '50%' });
    const e1 = executions(t1, agents(4));
    s.submit(t1, e1);
    expect(fleet.runs()).toEqual([e1[0]!.id, e1[1]!.id]);
    // a0 is busy with t1: t2's execution on a0 waits for the slot, not for t2's window.
    const t2 = task();
    const e2 = executions(t2, ['a0']);
    s.submit(t2, e2);
    expect(fleet.runs()).not.toContain(e2[0]!.id);
    s.finished('a0', result(e1[0]!.id, 'succeeded'));
    expect(fleet.runs()).toContain(e2[0]!.id);
  });

  it('stops after maxFailures: the rest is cancelled and nothing more is dispatched', () => {
    const { s, fleet } = setup();
    for (const a of agents(5)) fleet.online.add(a);
    const t = task({ concurrency: '1', maxFailures: '1' });
    const ex = executions(t, agents(5));
    s.submit(t, ex);
    s.finished('a0', result(ex[0]!.id, 'failed'));
    expect(fleet.runs()).toHaveLength(2); // one failure is allowed
    s.finished('a1', result(ex[1]!.id, 'timeout'));
    expect(fleet.runs()).toHaveLength(2);
    expect(ex.slice(2).map((e) => e.status)).toEqual(['cancelled', 'cancelled', 'cancelled']);
    expect(ex[2]!.reason).toMatch(/more than 1 failure/);
    expect(s.isActive(t.id)).toBe(false);
    expect(t.status).toBe('failed');
  });

  it('an execution refused by host policy counts as a failure before anything is dispatched', () => {
    const { s, fleet } = setup();
    for (const a of agents(3)) fleet.online.add(a);
    const t = task({ maxFailures: '0' });
    const ex = executions(t, agents(3));
    ex[0]!.status = 'policy_denied';
    ex[0]!.finishedAt = Date.now();
    s.submit(t, ex);
    expect(fleet.runs()).toEqual([]);
    expect(ex.slice(1).map((e) => e.status)).toEqual(['cancelled', 'cancelled']);
  });

  it('adopts a lost execution its agent reports when it comes back, and takes the real result', () => {
    const { s, fleet } = setup();
    fleet.online.add('a0').add('a1');
    const t = task();
    const ex = executions(t, ['a0', 'a1']);
    s.submit(t, ex);
    s.started('a0', { type: 'exec.started', executionId: ex[0]!.id, pid: 1, startedAt: Date.now() });
    s.started('a1', { type: 'exec.started', executionId: ex[1]!.id, pid: 2, startedAt: Date.now() });
    expect(ex[0]!.status).toBe('running');
    fleet.online.delete('a0');
    s.agentLeft('a0');
    s.sweep(Date.now() + RECONCILE_MS + 1);
    expect(ex[0]!.status).toBe('lost');
    expect(s.isActive(t.id)).toBe(true); // a1 still runs
    fleet.online.add('a0');
    const unknown = s.agentReturned('a0', { executions: [{ executionId: ex[0]!.id, state: 'running', nextSeq: 0 }] });
    expect(unknown).toEqual([]);
    expect(ex[0]!.status).toBe('running');
    expect(ex[0]!.reconciledAt).not.toBeNull();
    expect(fleet.of('exec.resume')).toContainEqual({ type: 'exec.resume', executionId: ex[0]!.id, fromSeq: 0 });
    s.finished('a0', result(ex[0]!.id, 'succeeded'));
    s.finished('a1', result(ex[1]!.id, 'succeeded'));
    expect(t.status).toBe('succeeded');
  });

  it('at a reconnect: an unconfirmed dispatch is sent again, a confirmed one the agent forgot is lost, unknown ones are handed back', () => {
    const { s, fleet } = setup();
    fleet.online.add('a0');
    const t = task();
    const ex = executions(t, ['a0', 'a0']);
    s.submit(t, ex);
    s.started('a0', { type: 'exec.started', executionId: ex[1]!.id, pid: 1, startedAt: Date.now() });
    const unknown = s.agentReturned('a0', { executions: [{ executionId: 'elsewhere', state: 'finished', nextSeq: 0 }] });
    expect(unknown.map((x) => x.executionId)).toEqual(['elsewhere']);
    expect(fleet.runs()).toEqual([ex[0]!.id, ex[1]!.id, ex[0]!.id]);
    expect(ex[1]!.status).toBe('lost');
    expect(ex[1]!.reason).toMatch(/did not report/);
  });

  it('sweeps: queue TTLs, agents that stay away, dispatches never started', () => {
    const { s, fleet } = setup();
    fleet.online.add('a2');
    const now = Date.now();
    const t = task({ offline: 'queue', queueTtlSec: 10 });
    const ex = [
      ...executions(t, ['a0'], { queuedUntil: now + 10_000 }),
      ...executions(t, ['a1']).map((e) => ({ ...e, id: `${e.id}-b` })),
      ...executions(t, ['a2']).map((e) => ({ ...e, id: `${e.id}-c` })),
    ];
    fleet.records.set('a1', { policy: null, lastSeenAt: now });
    s.submit(t, ex);
    expect(ex[2]!.status).toBe('dispatched');
    s.sweep(now + 5_000);
    expect(ex.map((e) => e.status)).toEqual(['pending', 'pending', 'dispatched']);
    s.sweep(now + 11_000);
    expect(ex[0]!.status).toBe('skipped');
    expect(ex[0]!.reason).toMatch(/queue TTL/);
    s.sweep(now + RECONCILE_MS + 1_000);
    expect(ex[1]!.status).toBe('skipped');
    expect(ex[1]!.reason).toMatch(/offline before its turn/);
    expect(ex[2]!.status).toBe('lost');
    expect(ex[2]!.reason).toBe('the agent never started it');
    expect(s.isActive(t.id)).toBe(false);
  });

  it('restores active tasks after a restart: pending ones wait for their agent, those never back are lost', async () => {
    const t = task();
    const ex = executions(t, ['a0', 'a1', 'a2']);
    ex[0]!.status = 'running';
    ex[0]!.startedAt = Date.now();
    const { s, fleet } = setup({ loaded: { tasks: [t], executions: ex } });
    expect(await s.restore()).toEqual({ tasks: 1, executions: 3 });
    expect(fleet.runs()).toEqual([]); // nobody is online yet
    fleet.online.add('a1');
    expect(s.agentReturned('a1', { executions: [] })).toEqual([]);
    expect(fleet.runs()).toEqual([ex[1]!.id]);
    // a0 and a2 never come back: the running one is lost, and so is the pending one (its
    // dispatch may have happened before the restart without being stored).
    s.sweep(Date.now() + RECONCILE_MS + 1_000);
    expect(ex[0]!.status).toBe('lost');
    expect(ex[2]!.status).toBe('lost');
    expect(ex[2]!.reason).toMatch(/server restarted/);
  });

  it('cancel stops pending executions, asks running ones to stop, and stores who cancelled', async () => {
    const { s, fleet, stored } = setup();
    fleet.online.add('a0');
    const t = task({ concurrency: '1' });
    const ex = executions(t, ['a0', 'a1']);
    s.submit(t, ex);
    const r = await s.cancel(t.id, 'alice');
    expect(r?.signalled).toBe(1);
    expect(ex[1]!.status).toBe('cancelled');
    expect(fleet.of('exec.cancel')).toEqual([{ type: 'exec.cancel', executionId: ex[0]!.id, reason: 'cancelled by alice' }]);
    expect(stored[0]).toMatchObject({ taskId: t.id, patch: { cancelledBy: 'alice' } });
    s.finished('a0', result(ex[0]!.id, 'cancelled'));
    expect(t.status).toBe('cancelled');
    expect(await s.cancel(t.id, 'alice')).toBeNull();
  });
  it("takes over a dead node's task: running ones resume from the stored output, unconfirmed ones are re-sent, queued ones dispatch in the window", async () => {
    const t = task({ concurrency: '2' });
    const ex = executions(t, ['a0', 'a1', 'a2', 'a3']);
    Object.assign(ex[0]!, { status: 'running', startedAt: Date.now(), nextSeq: 2 });
    Object.assign(ex[1]!, { status: 'dispatched', dispatchedAt: Date.now() });
    const { s, fleet } = setup({ ownerNode: 'n2', stored: new Map([[ex[0]!.id, 5]]) });
    for (const a of ['a0', 'a1', 'a2', 'a3']) fleet.online.add(a);
    expect(await s.takeOver([t], ex)).toEqual({ tasks: 1, resumed: 2 });
    // The stored chunks are the truth (the row lagged): resend from seq 5.
    expect(fleet.of('exec.resume')).toEqual([
      { type: 'exec.resume', executionId: ex[0]!.id, fromSeq: 5 },
      { type: 'exec.resume', executionId: ex[1]!.id, fromSeq: 0 },
    ]);
    // The window (2) is full with the two it found in flight: the unconfirmed one is sent again, nothing new.
    expect(fleet.runs()).toEqual([ex[1]!.id]);
    s.finished('a0', result(ex[0]!.id, 'failed', 3));
    expect(fleet.runs()).toEqual([ex[1]!.id, ex[2]!.id]);
    expect(ex[0]).toMatchObject({ status: 'failed', exitCode: 3 });
    // Taken twice (a repeated sweep): nothing is loaded again.
    expect(await s.takeOver([t], ex)).toEqual({ tasks: 0, resumed: 0 });
  });

  it('an agent away at the takeover has the reconcile timeout to come back, as after a restart', async () => {
    const t = task();
    const ex = executions(t, ['a0']);
    Object.assign(ex[0]!, { status: 'running', startedAt: Date.now() });
    const { s, fleet } = setup({ ownerNode: 'n2' });
    expect(await s.takeOver([t], ex)).toEqual({ tasks: 1, resumed: 0 });
    expect(fleet.sent).toEqual([]);
    s.sweep(Date.now() + RECONCILE_MS + 1_000);
    expect(ex[0]!.status).toBe('lost');
  });

  it('fenced: a task row write refused (another node took the task over) drops the task; a cancel answers null', async () => {
    const fenced = new Set<string>();
    const { s, fleet } = setup({ ownerNode: 'n1', fenced });
    fleet.online.add('a0');
    const t = task();
    const ex = executions(t, ['a0']);
    s.submit(t, ex);
    expect(s.holds('a0', ex[0]!.id)).toBe(true);
    fenced.add(t.id);
    expect(await s.cancel(t.id, 'alice')).toBeNull();
    expect(s.isActive(t.id)).toBe(false);
    expect(s.holds('a0', ex[0]!.id)).toBe(false);
    expect(fleet.of('exec.cancel')).toEqual([]);
    // Released by an exec.taken too: once.
    expect(s.release(t.id)).toBe(false);
  });
});
