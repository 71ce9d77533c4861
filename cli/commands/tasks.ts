import type { TaskView } from '../../protocol/index.js';
import { ApiFailure, clientFrom, type Client } from '../client.js';
import { CliError, outputMode, posInt, str, type Command } from '../command.js';
import { countsText, execSummary, prefixLines, table } from '../format.js';
import type { TaskDetail } from '../live.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function targetsText(targets: unknown): string {
  const t = (targets ?? {}) as { selector?: unknown; agentIds?: unknown };
  if (typeof t.selector === 'string') return t.selector.length > 60 ? `${t.selector.slice(0, 59)}…` : t.selector;
  if (Array.isArray(t.agentIds)) return `${t.agentIds.length} agent id(s)`;
  return '-';
}

/** A full task id, or a prefix of one that names exactly one task (as git does with commits). */
export async function resolveTaskId(c: Client, ref: string): Promise<string> {
  if (UUID.test(ref)) return ref.toLowerCase();
  if (!/^[0-9a-f-]{4,36}$/i.test(ref)) throw new CliError(`${JSON.stringify(ref)} is not a task id or an id prefix (at least 4 of [0-9a-f-])`);
  const res = await c.get<{ items: TaskView[]; total: number }>(`/api/tasks?idPrefix=${encodeURIComponent(ref)}&limit=5`);
  if (res.total === 0) throw new ApiFailure(404, 'not_found', `no task id starts with ${ref}`);
  if (res.total > 1) {
    throw new CliError(
      `task id prefix ${ref} is ambiguous (${res.total} tasks): ${res.items.map((t) => t.id).join(', ')}${res.total > res.items.length ? ', …' : ''}`,
    );
  }
  return res.items[0]!.id;
}

/** Prints each execution's stored output, every line prefixed by the agent's name, then its result. */
async function printOutputs(c: Client, t: TaskDetail, out: (s: string) => void): Promise<void> {
  const w = Math.max(...t.executions.map((e) => e.agentName.length));
  for (const e of t.executions) {
    // Skipped and policy-denied executions never ran: they have no output to fetch.
    if (e.status !== 'skipped' && e.status !== 'policy_denied') {
      const res = await c.request('GET', `/api/executions/${encodeURIComponent(e.id)}/output`);
      out(prefixLines(`${e.agentName.padEnd(w)} | `, await res.text()));
    }
  }
  for (const e of t.executions) out(`${e.agentName.padEnd(w)} : ${execSummary(e)}\n`);
}

/** `muster tasks`: recent tasks, newest first. */
export const tasks: Command = {
  name: 'tasks',
  summary: 'list recent tasks',
  usage: 'muster tasks [--limit N] [--status running|succeeded|failed|cancelled] [--output table|json]',
  options: { limit: { type: 'string' }, status: { type: 'string' } },
  run: async (ctx) => {
    const { values, out } = ctx;
    const mode = outputMode(values);
    const q = new URLSearchParams({ limit: String(posInt(values, 'limit') ?? 20) });
    const status = str(values, 'status');
    if (status) q.set('status', status);
    const res = await clientFrom(ctx).get<{ items: TaskView[]; total: number }>(`/api/tasks?${q}`);
    if (mode === 'json') {
      out(`${JSON.stringify(res.items, null, 2)}\n`);
      return;
    }
    // Lists carry no script text (only its hash), so the targets describe the task.
    out(
      table(
        ['ID', 'STATUS', 'CREATED', 'BY', 'AGENTS', 'RESULTS', 'TARGETS'],
        res.items.map((t) => [t.id, t.status, t.createdAt, t.createdBy, String(t.total), countsText(t), targetsText(t.targets)]),
      ),
    );
  },
};

/** `muster task ID`: one task with its executions; `--show-output` adds every agent's output. */
export const task: Command = {
  name: 'task',
  summary: 'show one task and its per-agent results (ID or a unique prefix)',
  usage: 'muster task ID|PREFIX [--show-output] [--output table|json]',
  options: { 'show-output': { type: 'boolean' } },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const ref = positionals[0];
    if (!ref || positionals.length > 1) throw new CliError('exactly one task ID (or unique prefix) is required');
    const c = clientFrom(ctx);
    const id = await resolveTaskId(c, ref);
    const t = await c.get<TaskDetail>(`/api/tasks/${encodeURIComponent(id)}`);
    if (mode === 'json') {
      out(`${JSON.stringify(t, null, 2)}\n`);
      return;
    }
    out(`task ${t.id} ${t.status}: ${countsText(t)}\ncreated ${t.createdAt} by ${t.createdBy}, interpreter ${t.interpreter}\n\n`);
    out(
      table(
        ['AGENT', 'STATUS', 'EXIT', 'DURATION', 'EXECUTION'],
        t.executions.map((e) => [
          e.agentName,
          e.status,
          e.exitCode === null ? (e.signal ?? '-') : String(e.exitCode),
          e.durationMs === null ? '-' : `${(e.durationMs / 1000).toFixed(1)}s`,
          e.id,
        ]),
      ),
    );
    if (values['show-output']) {
      out('\n');
      await printOutputs(c, t, out);
    }
  },
};

/** `muster cancel ID`: cancels what is not finished of a task. */
export const cancel: Command = {
  name: 'cancel',
  summary: 'cancel a task (ID or a unique prefix)',
  usage: 'muster cancel ID|PREFIX [--output table|json]',
  options: {},
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const ref = positionals[0];
    if (!ref || positionals.length > 1) throw new CliError('exactly one task ID (or unique prefix) is required');
    const c = clientFrom(ctx);
    const id = await resolveTaskId(c, ref);
    const t = await c.post<TaskView>(`/api/tasks/${encodeURIComponent(id)}/cancel`);
    out(mode === 'json' ? `${JSON.stringify(t, null, 2)}\n` : `task ${t.id} ${t.status}: ${countsText(t)}\n`);
  },
};
