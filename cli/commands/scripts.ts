import type { ScriptParamDef, ScriptSummary, ScriptView } from '../../protocol/index.js';
import { lineDiff } from '../../protocol/line-diff.js';
import { clientFrom } from '../client.js';
import { CliError, outputMode, str, type Command } from '../command.js';
import { table } from '../format.js';

const paramText = (p: ScriptParamDef): string => {
  const choices = p.type === 'choice' ? `(${p.choices.join('|')})` : '';
  const dflt = p.type !== 'secret' && p.default !== undefined ? `=${String(p.default)}` : '';
  return `${p.name}:${p.type}${choices}${dflt}`;
};

const versionArg = (v: string | undefined, what: string): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^[1-9]\d*$/.test(v)) throw new CliError(`${what} must be a version number`);
  return Number(v);
};

/**
 * `muster scripts [list] | show NAME [--version N] | versions NAME | diff NAME A [B]`: the script
 * library (run one with `muster exec --script NAME --param K=V`).
 */
export const scripts: Command = {
  name: 'scripts',
  summary: 'list library scripts, or show one (run with exec --script)',
  usage:
    'muster scripts [list] [--search TEXT] [--tag TAG] | muster scripts show NAME|ID [--version N] | muster scripts versions NAME|ID | muster scripts diff NAME|ID A [B]   [--output table|json]',
  options: { search: { type: 'string' }, tag: { type: 'string' }, version: { type: 'string' } },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const [sub = 'list', ref, ...extra] = positionals;
    if (extra.length && sub !== 'diff') throw new CliError(`unexpected arguments: ${extra.join(' ')}`);
    const c = clientFrom(ctx);
    if (sub === 'list') {
      if (ref !== undefined) throw new CliError(`unexpected argument: ${ref} (muster scripts show NAME)`);
      const q = new URLSearchParams({ limit: '1000' });
      const search = str(values, 'search');
      const tag = str(values, 'tag');
      if (search) q.set('q', search);
      if (tag) q.set('tag', tag);
      const res = await c.get<{ items: ScriptSummary[] }>(`/api/scripts?${q}`);
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
      out(`\n${s.body}${s.body.endsWith('\n') ? '' : '\n'}`);
      return;
    }
    if (sub === 'versions') {
      if (!ref) throw new CliError('usage: muster scripts versions NAME|ID');
      const res = await c.get<{ items: ScriptSummary[] }>(`/api/scripts/${encodeURIComponent(ref)}/versions?limit=1000`);
      if (mode === 'json') return void out(`${JSON.stringify(res.items, null, 2)}\n`);
      out(
        table(
          ['VERSION', 'AUTHOR', 'CREATED', 'BYTES', 'SHA256', 'PARAMS'],
          res.items.map((v) => [
            String(v.version),
            v.versionCreatedBy,
            v.versionCreatedAt,
            String(v.bodyBytes),
            v.bodySha256.slice(0, 12),
            v.params.map(paramText).join(' ') || '-',
          ]),
        ),
      );
      return;
    }
    if (sub === 'diff') {
      // Version A against B (default: the latest), as the console's diff shows them.
      if (!ref || extra.length < 1 || extra.length > 2) throw new CliError('usage: muster scripts diff NAME|ID A [B]   (B: the latest version)');
      const a = versionArg(extra[0], 'A')!;
      const b = versionArg(extra[1], 'B');
      const base = `/api/scripts/${encodeURIComponent(ref)}`;
      const [va, vb] = await Promise.all([c.get<ScriptView>(`${base}/versions/${a}`), c.get<ScriptView>(b ? `${base}/versions/${b}` : base)]);
      const lines = lineDiff(va.body, vb.body);
      const meta = (['description', 'interpreter'] as const)
        .filter((k) => va[k] !== vb[k])
        .map((k) => `${k}: ${JSON.stringify(va[k])} -> ${JSON.stringify(vb[k])}`);
      const pa = va.params.map(paramText).join(' ');
      const pb = vb.params.map(paramText).join(' ');
      if (pa !== pb) meta.push(`params: ${pa || '-'} -> ${pb || '-'}`);
      if (va.tags.join(',') !== vb.tags.join(',')) meta.push(`tags: ${va.tags.join(',') || '-'} -> ${vb.tags.join(',') || '-'}`);
      if (mode === 'json') return void out(`${JSON.stringify({ from: va.version, to: vb.version, changes: meta, lines }, null, 2)}\n`);
      out(`--- ${va.name} v${va.version}\n+++ ${vb.name} v${vb.version}\n`);
      for (const m of meta) out(`# ${m}\n`);
      for (const l of lines) out(`${l.op} ${l.text}\n`);
      return;
    }
    throw new CliError(`unknown scripts subcommand ${JSON.stringify(sub)}: list, show, versions or diff`);
  },
};
