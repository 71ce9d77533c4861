import type { ScheduleHistory, ScheduleView } from '../../protocol/index.js';
import { clientFrom } from '../client.js';
import { CliError, outputMode, pairs, posInt, str, type Command } from '../command.js';
import { table } from '../format.js';

const when = (s: ScheduleView): string => (s.cron !== null ? `cron "${s.cron}" ${s.timeZone}` : `every ${s.intervalSec} s`);
/** The script's name (schedules store its id), with the version it runs. */
const script = (s: ScheduleView, names: Map<string, string>): string => `${names.get(s.scriptId) ?? s.scriptId}@${s.version ?? 'latest'}`;
const scriptNames = async (c: ReturnType<typeof clientFrom>): Promise<Map<string, string>> =>
  new Map((await c.get<{ items: { id: string; name: string }[] }>('/api/scripts?limit=1000')).items.map((x) => [x.id, x.name]));
const ref = (r: string | undefined, sub: string): string => {
  if (!r) throw new CliError(`usage: muster schedules ${sub} NAME|ID`);
  return encodeURIComponent(r);
};

/** `muster schedules`: list, show (next fire times, history), create, enable, disable, delete. */
export const schedules: Command = {
  name: 'schedules',
  summary: 'list, show, create, enable, disable or delete schedules of library scripts',
  usage:
    'muster schedules [list] | show NAME|ID [--limit N] | create NAME --script S [--version N] (--cron EXPR [--tz ZONE] | --every SEC) ' +
    '--selector SEL [--param K=V]... [--timeout SEC] [--concurrency N|N%] [--max-failures N|N%] [--overlap skip|allow] [--missed skip|run_once] ' +
    '[--queue] [--disabled] | enable NAME|ID | disable NAME|ID | delete NAME|ID   [--output table|json]',
  options: {
    script: { type: 'string' },
    version: { type: 'string' },
    cron: { type: 'string' },
    tz: { type: 'string' },
    every: { type: 'string' },
    selector: { type: 'string' },
    param: { type: 'string', multiple: true },
    timeout: { type: 'string' },
    concurrency: { type: 'string' },
    'max-failures': { type: 'string' },
    overlap: { type: 'string' },
    missed: { type: 'string' },
    queue: { type: 'boolean' },
    disabled: { type: 'boolean' },
    limit: { type: 'string' },
  },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const [sub = 'list', arg, ...extra] = positionals;
    if (extra.length) throw new CliError(`unexpected arguments: ${extra.join(' ')}`);
    const c = clientFrom(ctx);
    const json = (v: unknown) => out(`${JSON.stringify(v, null, 2)}\n`);
    if (sub === 'list') {
      if (arg !== undefined) throw new CliError(`unexpected argument: ${arg} (muster schedules show NAME)`);
      const res = await c.get<{ items: ScheduleView[] }>('/api/schedules?limit=1000');
      if (mode === 'json') return void json(res.items);
      const names = await scriptNames(c);
      out(
        table(
          ['NAME', 'ENABLED', 'WHEN', 'SCRIPT', 'SELECTOR', 'NEXT'],
          res.items.map((s) => [s.name, s.enabled ? 'yes' : 'no', when(s), script(s, names), s.targets.selector, s.nextFireAt ?? '-']),
        ),
      );
      return;
    }
    if (sub === 'show') {
      const id = ref(arg, 'show');
      const limit = posInt(values, 'limit') ?? 10;
      const [s, h] = await Promise.all([c.get<ScheduleView>(`/api/schedules/${id}`), c.get<ScheduleHistory>(`/api/schedules/${id}/history?limit=${limit}`)]);
      if (mode === 'json') return void json({ ...s, history: h });
      const names = await scriptNames(c);
      out(`${s.name} (${s.id}) ${s.enabled ? 'enabled' : 'disabled'}, created by ${s.createdBy}\n`);
      out(
        `runs ${script(s, names)} on ${s.targets.selector}, ${when(s)}; overlap ${s.overlap}, missed ${s.missed}, offline ${s.offline}, timeout ${s.timeoutSec} s` +
          `${s.concurrency ? `, concurrency ${s.concurrency}` : ''}${s.maxFailures ? `, max failures ${s.maxFailures}` : ''}\n`,
      );
      const params = Object.entries(s.params)
        .map(([k, v]) => `${k}=${String(v)}`)
        .concat(s.secretParams.map((k) => `${k}=(secret)`));
      if (params.length) out(`params: ${params.join(' ')}\n`);
      out(`next fires:${s.nextFires.length ? `\n${s.nextFires.map((t) => `  ${t}`).join('\n')}` : ' none (disabled)'}\n`);
      const rate = h.stats.successRate === null ? '-' : `${Math.round(h.stats.successRate * 100)}%`;
      out(`history: ${h.total} fires, success rate ${rate}\n`);
      if (h.items.length) {
        out(
          table(
            ['DUE', 'FIRED', 'STATUS', 'TASK', 'TASK STATUS', 'REASON'],
            h.items.map((f) => [f.dueAt, f.firedAt ?? '-', f.status, f.taskId ?? '-', f.taskStatus ?? '-', f.reason ?? '-']),
          ),
        );
      }
      return;
    }
    if (sub === 'create') {
      if (!arg) throw new CliError('usage: muster schedules create NAME --script S (--cron EXPR | --every SEC) --selector SEL');
      const scriptId = str(values, 'script');
      const selector = str(values, 'selector');
      const cron = str(values, 'cron');
      const every = posInt(values, 'every');
      if (!scriptId) throw new CliError('--script NAME|ID is required');
      if (!selector) throw new CliError('--selector is required (e.g. all, or labels.role == "web")');
      if ((cron === undefined) === (every === undefined)) throw new CliError('give either --cron EXPR or --every SEC');
      const version = posInt(values, 'version');
      const timeoutSec = posInt(values, 'timeout');
      const overlap = str(values, 'overlap');
      const missed = str(values, 'missed');
      if (overlap !== undefined && overlap !== 'skip' && overlap !== 'allow') throw new CliError('--overlap must be skip or allow');
      if (missed !== undefined && missed !== 'skip' && missed !== 'run_once') throw new CliError('--missed must be skip or run_once');
      const body = {
        name: arg,
        scriptId,
        selector,
        params: pairs(values, 'param'),
        ...(version ? { version } : {}),
        ...(cron !== undefined ? { cron, timeZone: str(values, 'tz') ?? 'UTC' } : { intervalSec: every }),
        ...(timeoutSec ? { timeoutSec } : {}),
        ...(str(values, 'concurrency') ? { concurrency: str(values, 'concurrency') } : {}),
        ...(str(values, 'max-failures') ? { maxFailures: str(values, 'max-failures') } : {}),
        ...(overlap ? { overlap } : {}),
        ...(missed ? { missed } : {}),
        ...(values['queue'] === true ? { offline: 'queue' } : {}),
        ...(values['disabled'] === true ? { enabled: false } : {}),
      };
      const s = await c.post<ScheduleView>('/api/schedules', body);
      if (mode === 'json') return void json(s);
      out(`schedule ${s.name} created (${s.id}); next fire ${s.nextFireAt ?? 'none (disabled)'}\n`);
      return;
    }
    if (sub === 'enable' || sub === 'disable') {
      const s = await c.patch<ScheduleView>(`/api/schedules/${ref(arg, sub)}`, { enabled: sub === 'enable' });
      if (mode === 'json') return void json(s);
      out(`schedule ${s.name} ${sub}d${s.enabled ? `; next fire ${s.nextFireAt ?? '-'}` : ''}\n`);
      return;
    }
    if (sub === 'delete') {
      await c.delete(`/api/schedules/${ref(arg, 'delete')}`);
      out(mode === 'json' ? `${JSON.stringify({ name: arg, deleted: true })}\n` : `schedule ${arg} deleted\n`);
      return;
    }
    throw new CliError(`unknown schedules subcommand ${JSON.stringify(sub)}: list, show, create, enable, disable or delete`);
  },
};
