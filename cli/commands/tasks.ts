import fs from 'node:fs';
import type { AgentView, ExecutionView, TaskView } from '../../protocol/index.js';
import { clientFrom, withSelector, type Client } from '../client.js';
import { CliError, posInt, str, type Command, type CommandContext } from '../command.js';
import { prefixLines, table } from '../format.js';

type TaskDetail = TaskView & { executions: ExecutionView[] };

const POLL_MS = 500;

function countsText(t: TaskView): string {
  return Object.entries(t.counts).map(([k, v]) => `${v} ${k}`).join(', ') || '0';
}

function targetsText(targets: unknown): string {
  const t = (targets ?? {}) as { selector?: unknown; agentIds?: unknown };
  if (typeof t.selector === 'string') return t.selector.length > 60 ? `${t.selector.slice(0, 59)}…` : t.selector;
  if (Array.isArray(t.agentIds)) return `${t.agentIds.length} agent id(s)`;
  return '-';
}

function execSummary(e: ExecutionView): string {
  const bits = [e.exitCode !== null ? `exit ${e.exitCode}` : null, e.signal ? `signal ${e.signal}` : null,
    e.durationMs !== null ? `${(e.durationMs / 1000).toFixed(1)}s` : null, e.reason, e.truncated ? 'output truncated' : null].filter(Boolean);
  return `${e.status}${bits.length ? ` (${bits.join(', ')})` : ''}`;
}

/** Prints each execution's stored output, every line prefixed by the agent's name, then its result. */
async function printOutputs(c: Client, t: TaskDetail, out: (s: string) => void): Promise<void> {
  const w = Math.max(...t.executions.map((e) => e.agentName.length));
  for (const e of t.executions) {
    if (e.status !== 'skipped') {
      const res = await c.request('GET', `/api/executions/${encodeURIComponent(e.id)}/output`);
      out(prefixLines(`${e.agentName.padEnd(w)} | `, await res.text()));
    }
  }
  for (const e of t.executions) out(`${e.agentName.padEnd(w)} : ${execSummary(e)}\n`);
}

/** Turns `--agents a,b` (ids or names) into agent ids, failing on any that the fleet does not know. */
async function resolveAgents(c: Client, list: string): Promise<string[]> {
  const wanted = list.split(',').map((s) => s.trim()).filter(Boolean);
  if (!wanted.length) throw new CliError('--agents needs at least one name or id');
  const { items } = await c.get<{ items: AgentView[] }>('/api/agents?limit=50000');
  const ids: string[] = [];
  const unknown: string[] = [];
  for (const w of wanted) {
    const hit = items.filter((a) => a.id === w || a.name === w);
    if (!hit.length) unknown.push(w);
    for (const a of hit) ids.push(a.id);
  }
  if (unknown.length) throw new CliError(`unknown agent(s): ${unknown.join(', ')}`);
  return [...new Set(ids)];
}

function readScript(ctx: CommandContext): string {
  const inline = str(ctx.values, 'eval');
  const file = ctx.positionals[0];
  if (inline !== undefined && file !== undefined) throw new CliError('give either -e SCRIPT or SCRIPT_FILE, not both');
  if (ctx.positionals.length > 1) throw new CliError(`unexpected arguments: ${ctx.positionals.slice(1).join(' ')} (script arguments go in --arg)`);
  if (inline !== undefined) {
    if (!inline) throw new CliError('-e needs a non-empty script');
    return inline;
  }
  if (file === undefined) throw new CliError('a script is required: SCRIPT_FILE, - for stdin, or -e SCRIPT');
  try {
    return fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/** `muster run`: creates a task, waits for it, prints every agent's output; non-zero unless all succeeded. */
export const run: Command = {
  name: 'run',
  summary: 'run a script on agents and print their output',
  usage: "muster run (--selector S | --agents a,b) [--interpreter bash|sh|python3|node|shebang] [--timeout SEC] [--arg X]... [--json] (SCRIPT_FILE | - | -e 'script')",
  options: {
    selector: { type: 'string', short: 's' }, agents: { type: 'string' }, interpreter: { type: 'string' }, timeout: { type: 'string' },
    arg: { type: 'string', multiple: true }, eval: { type: 'string', short: 'e' }, json: { type: 'boolean' },
  },
  run: async (ctx) => {
    const { values, out, err, env } = ctx;
    const selector = str(values, 'selector');
    const agentList = str(values, 'agents');
    if ((selector === undefined) === (agentList === undefined)) throw new CliError('give exactly one of --selector S or --agents a,b');
    const script = readScript(ctx);
    const timeoutSec = posInt(values, 'timeout');
    const args = (values['arg'] as string[] | undefined) ?? [];
    const c = clientFrom(env);
    const targets = selector !== undefined ? { selector } : { agentIds: await resolveAgents(c, agentList!) };
    const body = { script, args, targets, ...(str(values, 'interpreter') ? { interpreter: str(values, 'interpreter') } : {}), ...(timeoutSec ? { timeoutSec } : {}) };
    const created = await withSelector(selector, () => c.post<TaskDetail>('/api/tasks', body));
    if (!values['json']) err(`task ${created.id}: ${created.executions.length} agent(s)\n`);

    // Ctrl-C cancels the task once and keeps waiting for the result; a second Ctrl-C leaves.
    let interrupted = false;
    const onSigint = (): void => {
      if (interrupted) process.exit(130);
      interrupted = true;
      err(`cancelling task ${created.id} (Ctrl-C again to leave without waiting)\n`);
      void c.post(`/api/tasks/${encodeURIComponent(created.id)}/cancel`).catch((e: unknown) => err(`cancel failed: ${(e as Error).message}\n`));
    };
    process.on('SIGINT', onSigint);
    let t: TaskDetail;
    try {
      for (;;) {
        t = await c.get<TaskDetail>(`/api/tasks/${encodeURIComponent(created.id)}`);
        if (t.status !== 'running') break;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    } finally {
      process.off('SIGINT', onSigint);
    }
    if (values['json']) out(`${JSON.stringify(t, null, 2)}\n`);
    else {
      await printOutputs(c, t, out);
      out(`task ${t.id} ${t.status}: ${countsText(t)}\n`);
    }
    return t.executions.every((e) => e.status === 'succeeded') ? 0 : 1;
  },
};

/** `muster tasks`: recent tasks, newest first. */
export const tasks: Command = {
  name: 'tasks',
  summary: 'list recent tasks',
  usage: 'muster tasks [--limit N] [--json]',
  options: { limit: { type: 'string' }, json: { type: 'boolean' } },
  run: async ({ values, out, env }) => {
    const limit = posInt(values, 'limit') ?? 20;
    const res = await clientFrom(env).get<{ items: TaskView[]; total: number }>(`/api/tasks?limit=${limit}`);
    if (values['json']) {
      out(`${JSON.stringify(res.items, null, 2)}\n`);
      return;
    }
    // Lists carry no script text (only its hash), so the targets describe the task.
    out(table(['ID', 'STATUS', 'CREATED', 'BY', 'AGENTS', 'RESULTS', 'TARGETS'], res.items.map((t) => [
      t.id, t.status, t.createdAt, t.createdBy, String(t.total), countsText(t), targetsText(t.targets),
    ])));
  },
};

/** `muster task ID`: one task with its executions; `--output` adds every agent's output. */
export const task: Command = {
  name: 'task',
  summary: 'show one task and its per-agent results',
  usage: 'muster task ID [--output] [--json]',
  options: { output: { type: 'boolean' }, json: { type: 'boolean' } },
  run: async ({ values, positionals, out, env }) => {
    const id = positionals[0];
    if (!id || positionals.length > 1) throw new CliError('exactly one task ID is required');
    const c = clientFrom(env);
    const t = await c.get<TaskDetail>(`/api/tasks/${encodeURIComponent(id)}`);
    if (values['json']) {
      out(`${JSON.stringify(t, null, 2)}\n`);
      return;
    }
    out(`task ${t.id} ${t.status}: ${countsText(t)}\ncreated ${t.createdAt} by ${t.createdBy}, interpreter ${t.interpreter}\n\n`);
    out(table(['AGENT', 'STATUS', 'EXIT', 'DURATION', 'EXECUTION'], t.executions.map((e) => [
      e.agentName, e.status, e.exitCode === null ? (e.signal ?? '-') : String(e.exitCode), e.durationMs === null ? '-' : `${(e.durationMs / 1000).toFixed(1)}s`, e.id,
    ])));
    if (values['output']) {
      out('\n');
      await printOutputs(c, t, out);
    }
  },
};
