import type { ScriptSummary } from '../../protocol/index.js';
import { clientFrom } from '../client.js';
import { CliError, outputMode, str, type Command } from '../command.js';
import { table } from '../format.js';

interface Param {
  name: string;
  type: string;
  default?: unknown;
  required?: boolean;
  choices?: string[];
}
/** A script as listed (no body) or shown (with its body); its params as this command prints them. */
type ScriptView = Omit<ScriptSummary, 'params'> & { params: Param[]; body?: string };

const paramText = (p: Param): string =>
  `${p.name}:${p.type}${p.choices ? `(${p.choices.join('|')})` : ''}${p.default !== undefined ? `=${String(p.default)}` : ''}`;

/** `muster scripts [list] | muster scripts show NAME`: the script library (run one with `muster exec --script NAME --param K=V`). */
export const scripts: Command = {
  name: 'scripts',
  summary: 'list library scripts, or show one (run with exec --script)',
  usage: 'muster scripts [list] [--search TEXT] [--tag TAG] | muster scripts show NAME|ID [--version N]   [--output table|json]',
  options: { search: { type: 'string' }, tag: { type: 'string' }, version: { type: 'string' } },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const [sub = 'list', ref, ...extra] = positionals;
    if (extra.length) throw new CliError(`unexpected arguments: ${extra.join(' ')}`);
    const c = clientFrom(ctx);
    if (sub === 'list') {
      if (ref !== undefined) throw new CliError(`unexpected argument: ${ref} (muster scripts show NAME)`);
      const q = new URLSearchParams({ limit: '1000' });
      const search = str(values, 'search');
      const tag = str(values, 'tag');
      if (search) q.set('q', search);
      if (tag) q.set('tag', tag);
      const res = await c.get<{ items: ScriptView[] }>(`/api/scripts?${q}`);
      if (mode === 'json') return void out(`${JSON.stringify(res.items, null, 2)}\n`);
      out(
        table(
          ['NAME', 'VERSION', 'INTERPRETER', 'OWNER', 'PARAMS', 'TAGS'],
          res.items.map((s) => [s.name, String(s.latestVersion), s.interpreter, s.owner, s.params.map(paramText).join(' ') || '-', s.tags.join(',') || '-']),
        ),
      );
      return;
    }
    if (sub === 'show') {
      if (!ref) throw new CliError('usage: muster scripts show NAME|ID [--version N]');
      const version = str(values, 'version');
      if (version !== undefined && !/^\d+$/.test(version)) throw new CliError('--version must be a version number');
      const p = `/api/scripts/${encodeURIComponent(ref)}${version ? `/versions/${version}` : ''}`;
      const s = await c.get<ScriptView>(p);
      if (mode === 'json') return void out(`${JSON.stringify(s, null, 2)}\n`);
      out(`${s.name} v${s.version} (${s.interpreter}, owner ${s.owner}${s.tags.length ? `, tags ${s.tags.join(',')}` : ''})\n`);
      if (s.description) out(`${s.description}\n`);
      if (s.params.length) out(`params: ${s.params.map(paramText).join('  ')}   (muster exec --script ${s.name} --param NAME=VALUE)\n`);
      out(`\n${s.body ?? ''}${s.body?.endsWith('\n') ? '' : '\n'}`);
      return;
    }
    throw new CliError(`unknown scripts subcommand ${JSON.stringify(sub)}: list or show`);
  },
};
