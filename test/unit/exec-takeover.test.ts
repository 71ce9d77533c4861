import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../server/auth/audit.js';
import type { Execution, Task } from '../../server/exec/model.js';
import { Takeover } from '../../server/exec/takeover.js';

// The takeover of a dead node's running tasks, with a fake database: which tasks it claims, what
// the scheduler is given, and what happens when the database fails between the claim and the read
// (the claimed tasks are no longer the dead node's: the sweep alone would never find them again).

const task = (id: string): Task => ({ id, name: `task ${id}` }) as Task;

function setup(opts: { stored: string[]; batch?: number; failLoads?: number }) {
  const running = [...opts.stored]; // owned by the dead node
  const owned = new Set<string>(); // owned by this node
  let failLoads = opts.failLoads ?? 0;
  const scheduled: string[] = [];
  const audits: AuditEvent[] = [];
  const taken: string[][] = [];
  let counted = 0;
  const t = new Takeover({
    repo: {
      claimFrom: async (dead, node, limit) => {
        expect([dead, node]).toEqual(['B', 'A']);
        const ids = running.splice(0, limit);
        for (const id of ids) owned.add(id);
        return ids;
      },
      loadOwned: async (ids, node) => {
        expect(node).toBe('A');
        await new Promise((r) => setTimeout(r, 5));
        if (failLoads > 0) {
          failLoads--;
          throw new Error('connection lost');
        }
        return { tasks: ids.filter((id) => owned.has(id)).map(task), executions: [] as Execution[] };
      },
    },
    scheduler: {
      takeOver: async (tasks) => {
        // Like Scheduler.takeOver: a task it already holds is not loaded again.
        const fresh = tasks.filter((x) => !scheduled.includes(x.id));
        scheduled.push(...fresh.map((x) => x.id));
        return { tasks: fresh.length, resumed: 0 };
      },
    },
    relay: { taken: (_from, ids) => void taken.push(ids) },
    audit: { record: async (e) => void audits.push(e) },
    tasksTakenOver: { inc: (_l, n) => void (counted += n) },
    nodeId: 'A',
    batchTasks: opts.batch ?? 500,
    log: pino({ level: 'silent' }),
  });
  return { t, scheduled, audits, taken, counted: () => counted };
}

describe('Takeover', () => {
  it('claims every running task of the dead node a batch at a time and restores each once, audited', async () => {
    const s = setup({ stored: ['t1', 't2', 't3', 't4', 't5'], batch: 2 });
    await s.t.takeOver('B');
    expect(s.scheduled).toEqual(['t1', 't2', 't3', 't4', 't5']);
    expect(s.taken).toEqual([['t1', 't2'], ['t3', 't4'], ['t5']]);
    expect(s.audits.map((a) => [a.action, a.targetId, a.details?.['from'], a.details?.['to']])).toEqual(
      ['t1', 't2', 't3', 't4', 't5'].map((id) => ['task.takeover', id, 'B', 'A']),
    );
    expect(s.counted()).toBe(5);
    expect(s.t.pending).toBe(false);
  });

  it('keeps a claimed batch whose read failed and restores it on retry, once', async () => {
    const s = setup({ stored: ['t1', 't2'], failLoads: 2 });
    await expect(s.t.takeOver('B')).rejects.toThrow('connection lost');
    // The sweep calls the hook again: the dead node owns nothing any more, so only the retry can restore them.
    await s.t.takeOver('B');
    expect(s.scheduled).toEqual([]);
    expect(s.t.pending).toBe(true);
    expect(await s.t.retry()).toBe(false); // the database still fails
    expect(s.t.pending).toBe(true);
    expect(await s.t.retry()).toBe(true);
    expect(s.scheduled).toEqual(['t1', 't2']);
    expect(s.audits).toHaveLength(2);
    expect(s.counted()).toBe(2);
    expect(s.t.pending).toBe(false);
    expect(await s.t.retry()).toBe(true);
    expect(s.audits).toHaveLength(2);
  });

  it('restores a task once when the sweep and the retry meet', async () => {
    const s = setup({ stored: ['t1', 't2', 't3'], batch: 1, failLoads: 1 });
    await expect(s.t.takeOver('B')).rejects.toThrow('connection lost');
    expect(s.t.pending).toBe(true);
    // The sweep's next call (t2, t3) and the retry (t1) run at the same time.
    await Promise.all([s.t.takeOver('B'), s.t.retry(), s.t.retry()]);
    expect([...s.scheduled].sort()).toEqual(['t1', 't2', 't3']);
    expect(s.audits.map((a) => a.targetId).sort()).toEqual(['t1', 't2', 't3']);
    expect(s.counted()).toBe(3);
    expect(s.t.pending).toBe(false);
  });
});
