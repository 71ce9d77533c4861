import fs from 'node:fs';
import type { AgentView, ExecutionView } from '../../protocol/index.js';
import { ApiFailure, clientFrom, withSelector, type Client } from '../client.js';
import { CliError, pairs, posInt, str, strs, type Command, type CommandContext } from '../command.js';
import { countsText, execSummary, Palette } from '../format.js';
import { TaskFollower, type LiveEvent, type TaskDetail } from '../live.js';
import { ConsoleSocket } from '../socket.js';
import { signScript } from './keys.js';

/** Turns agent names or ids into agent ids, failing on any that the fleet does not know. */
export async function resolveAgents(c: Client, wanted: string[]): Promise<string[]> {
  if (!wanted.length) throw new CliError('--agent needs a name or id');
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

function readScript(ctx: CommandContext): string | undefined {
  const inline = str(ctx.values, 'eval');
  const file = str(ctx.values, 'script-file') ?? ctx.positionals[0];
  if (str(ctx.values, 'script-file') !== undefined && ctx.positionals.length) throw new CliError('give the script file once (--script-file FILE or FILE)');
  if (inline !== undefined && file !== undefined) throw new CliError('give either -e SCRIPT or a script file, not both');
  if (ctx.positionals.length > 1) throw new CliError(`unexpected arguments: ${ctx.positionals.slice(1).join(' ')} (script arguments go in --arg)`);
  if (inline !== undefined) {
    if (!inline) throw new CliError('-e needs a non-empty script');
    return inline;
  }
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
  }
}

/** `12` → 12, `25%` → "25%"; anything else is a usage error. */
function limit(values: CommandContext['values'], name: string): number | string | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  if (/^\d+(\.\d+)?%$/.test(v)) return v;
  throw new CliError(`--${name} must be a count or a percentage like 25%, got ${JSON.stringify(v)}`);
}

/** A server without the script library refuses `scriptId` in POST /api/tasks (its body schema is strict). */
function noLibrary(e: unknown): boolean {
  return e instanceof ApiFailure && e.status === 400 && /scriptId/.test(e.message) && /unrecognized|unknown|expected/i.test(e.message);
}

/** Prints live events as prefixed lines (or JSON lines) and keeps the count of what was printed. */
function printer(ctx: CommandContext, json: boolean, width: number, palette: Palette): (e: LiveEvent) => void {
  return (ev) => {
    const x = ev.execution;
    if (json) {
      const base = { executionId: x.id, agentId: x.agentId, agent: x.agentName };
      ctx.out(
        `${JSON.stringify(ev.type === 'output' ? { type: 'output', ...base, stream: ev.stream, text: ev.text } : { type: 'execution', ...base, execution: x })}\n`,
      );
      return;
    }
    const name = palette.host(x.agentName, x.agentName.padEnd(width));
    if (ev.type === 'output') ctx.out(`${name} ${ev.stream === 'stderr' ? palette.err('!') : '|'} ${ev.text}\n`);
    else if (ev.execution.status !== 'pending' && ev.execution.status !== 'dispatched' && ev.execution.status !== 'running') {
      ctx.out(`${name} : ${palette.status(x.status, execSummary(x))}\n`);
    }
  };
}

/**
 * `muster exec` (alias `run`): creates a task and streams every host's output live over the
 * console socket; exits 0 only if every execution succeeded.
 */
export const exec: Command = {
  name: 'exec',
  aliases: ['run'],
  summary: 'run a script on agents, streaming their output live',
  usage:
    "muster exec (--selector S | --agent A [--agent B]...) [-e 'script' | --script-file FILE | FILE | - | --script NAME [--script-version N] [--param K=V]...]\n" +
    '         [--interpreter bash|sh|python3|node|shebang] [--arg X]... [--env K=V]... [--timeout SEC]\n' +
    '         [--concurrency N|P%] [--max-failures N|P%] [--queue [--queue-ttl SEC]] [--sign-key KEY | --signature SIG] [--json] [--color auto|always|never]',
  options: {
    selector: { type: 'string', short: 's' },
    agent: { type: 'string', multiple: true },
    agents: { type: 'string', multiple: true },
    interpreter: { type: 'string' },
    timeout: { type: 'string' },
    arg: { type: 'string', multiple: true },
    env: { type: 'string', multiple: true },
    eval: { type: 'string', short: 'e' },
    'script-file': { type: 'string', short: 'f' },
    script: { type: 'string' },
    'script-version': { type: 'string' },
    param: { type: 'string', multiple: true },
    concurrency: { type: 'string' },
    'max-failures': { type: 'string' },
    queue: { type: 'boolean' },
    'queue-ttl': { type: 'string' },
    color: { type: 'string' },
    'sign-key': { type: 'string' },
    signature: { type: 'string' },
  },
  run: async (ctx) => {
    const { values, err } = ctx;
    const selector = str(values, 'selector');
    const agentNames = [...strs(values, 'agent', true), ...strs(values, 'agents', true)];
    const byAgent = values['agent'] !== undefined || values['agents'] !== undefined;
    if ((selector === undefined) === !byAgent) throw new CliError('give exactly one of --selector S or --agent NAME (repeatable)');
    const script = readScript(ctx);
    const libRef = str(values, 'script');
    const params = pairs(values, 'param');
    if (libRef !== undefined && script !== undefined) throw new CliError('give either a script (-e, --script-file, FILE) or --script NAME, not both');
    if (libRef === undefined && script === undefined)
      throw new CliError('a script is required: -e SCRIPT, --script-file FILE, FILE, - for stdin, or --script NAME');
    if (Object.keys(params).length && libRef === undefined) throw new CliError('--param is for library scripts: add --script NAME');
    const timeoutSec = posInt(values, 'timeout');
    const queueTtlSec = posInt(values, 'queue-ttl');
    if (queueTtlSec !== undefined && !values['queue']) throw new CliError('--queue-ttl needs --queue');
    const color = str(values, 'color') ?? 'auto';
    if (!['auto', 'always', 'never'].includes(color)) throw new CliError('--color must be auto, always or never');
    const json = values['json'] === true || str(values, 'output') === 'json';

    const c = clientFrom(ctx);
    const targets = selector !== undefined ? { selector } : { agentIds: await resolveAgents(c, agentNames) };
    const body: Record<string, unknown> = { targets };
    const interpreter = str(values, 'interpreter');
    const args = strs(values, 'arg');
    const env = pairs(values, 'env');
    const scriptVersion = posInt(values, 'script-version');
    if (libRef !== undefined) {
      // A library script brings its own interpreter; its inputs are typed parameters (MUSTER_PARAM_*).
      if (interpreter || args.length || Object.keys(env).length)
        throw new CliError('--interpreter, --arg and --env do not apply to a library script: use --param NAME=VALUE');
      if (values['sign-key'] !== undefined || values['signature'] !== undefined)
        throw new CliError('--sign-key and --signature apply to a script you send, not to a library script');
      Object.assign(body, { scriptId: libRef, params, ...(scriptVersion ? { version: scriptVersion } : {}) });
    } else {
      if (scriptVersion !== undefined) throw new CliError('--script-version needs --script NAME');
      body['script'] = script;
      if (interpreter) body['interpreter'] = interpreter;
      if (args.length) body['args'] = args;
      if (Object.keys(env).length) body['env'] = env;
      // For hosts whose policy requires signed scripts: signed exactly as submitted (the API's
      // defaults, interpreter bash and no cwd, are what the agent sees and verifies).
      const signKey = str(values, 'sign-key');
      if (signKey !== undefined && str(values, 'signature') !== undefined) throw new CliError('give either --sign-key or --signature, not both');
      const signature =
        signKey !== undefined ? signScript(signKey, { script: script!, interpreter: interpreter ?? 'bash', args, env, cwd: null }) : str(values, 'signature');
      if (signature) body['signature'] = signature;
    }
    if (timeoutSec) body['timeoutSec'] = timeoutSec;
    const concurrency = limit(values, 'concurrency');
    if (concurrency !== undefined) body['concurrency'] = concurrency;
    const maxFailures = limit(values, 'max-failures');
    if (maxFailures !== undefined) body['maxFailures'] = maxFailures;
    if (values['queue']) Object.assign(body, { offline: 'queue', ...(queueTtlSec ? { queueTtlSec } : {}) });

    // The socket first: a refused socket fails before a task exists.
    const sock = await ConsoleSocket.connect(c);
    let created: TaskDetail;
    try {
      created = await withSelector(selector, () => c.post<TaskDetail>('/api/tasks', body));
    } catch (e) {
      sock.close();
      if (libRef !== undefined && noLibrary(e)) {
        throw new CliError(
          'this server has no script library (POST /api/tasks does not take scriptId), so --script and --param cannot be used; send the script itself with -e or --script-file',
        );
      }
      throw e;
    }
    const width = Math.max(...created.executions.map((e) => e.agentName.length));
    const palette = new Palette(color === 'always' || (color === 'auto' && process.stdout.isTTY === true && !ctx.env['NO_COLOR']));
    for (const name of [...new Set(created.executions.map((e) => e.agentName))].sort()) palette.host(name, name);
    if (json) ctx.out(`${JSON.stringify({ type: 'task', task: created })}\n`);
    else err(`task ${created.id}: ${created.executions.length} agent(s)\n`);

    const follower = new TaskFollower(c, sock, created, printer(ctx, json, width, palette));
    follower.onSocketLost = (why) => err(`${why}; following task ${created.id} by polling\n`);

    // Ctrl-C cancels the task and keeps streaming until it ends; a second Ctrl-C detaches.
    let interrupted = false;
    let detach!: () => void;
    const detached = new Promise<'detached'>((r) => {
      detach = () => r('detached');
    });
    const onSigint = (): void => {
      if (interrupted) {
        follower.stop();
        err(`detached; task ${created.id} goes on (muster task ${created.id.slice(0, 8)})\n`);
        detach();
        return;
      }
      interrupted = true;
      err(`cancelling task ${created.id} (Ctrl-C again to detach)\n`);
      c.post(`/api/tasks/${encodeURIComponent(created.id)}/cancel`).catch((e: unknown) => err(`cancel failed: ${(e as Error).message}\n`));
    };
    process.on('SIGINT', onSigint);
    let t: TaskDetail | 'detached';
    try {
      t = await Promise.race([follower.start(), detached]);
    } finally {
      process.off('SIGINT', onSigint);
      sock.close();
    }
    if (t === 'detached') return 130;
    const ok = t.executions.every((e: ExecutionView) => e.status === 'succeeded');
    if (json) ctx.out(`${JSON.stringify({ type: 'summary', taskId: t.id, status: t.status, counts: t.counts, total: t.total, ok })}\n`);
    else ctx.out(`task ${t.id} ${palette.status(t.status, t.status)}: ${countsText(t)}\n`);
    return ok ? 0 : 1;
  },
};
