import type { RolloutView } from '../../protocol/index.js';
import { clientFrom, withSelector } from '../client.js';
import { CliError, outputMode, str, strs, type Command } from '../command.js';
import { countsText, table } from '../format.js';

function show(r: RolloutView, out: (s: string) => void): void {
  out(`rollout ${r.id} ${r.state}${r.reason ? ` (${r.reason})` : ''}: version ${r.version}, ${r.total} target(s): ${countsText(r)}\n`);
  out(`selector ${r.selector}, waves ${JSON.stringify(r.waveSpec)}, wave ${r.currentWave + 1}/${r.waves.length}, failures ${r.failures}/${r.maxFailures}\n`);
  if (r.targets?.length) {
    out('\n');
    out(table(['AGENT', 'WAVE', 'STATE', 'FROM', 'REASON'], r.targets.map((t) => [t.agentName, String(t.wave + 1), t.state, t.fromVersion ?? '-', t.reason ?? ''])));
  }
}

/** A wave: a count (`5`) or a percentage (`10%`). */
function wave(w: string): number | string {
  if (/^\d+$/.test(w)) return Number(w);
  if (/^\d+(\.\d+)?%$/.test(w)) return w;
  throw new CliError(`a wave is a count or a percentage like 10%, got ${JSON.stringify(w)}`);
}

/** `muster rollout create|status|list|pause|resume|cancel`: batch agent updates in waves. */
export const rollout: Command = {
  name: 'rollout',
  summary: 'agent updates in waves: create, status, list, pause, resume, cancel',
  usage: 'muster rollout create --artifact ID [--selector S] [--waves 1,10%,100%] [--max-failures N] [--allow-downgrade]\n' +
    '       muster rollout status ID | list | pause ID | resume ID | cancel ID   [--output table|json]',
  options: {
    artifact: { type: 'string' }, selector: { type: 'string', short: 's' }, waves: { type: 'string', multiple: true },
    'max-failures': { type: 'string' }, 'allow-downgrade': { type: 'boolean' },
  },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const [sub, id, ...extra] = positionals;
    if (extra.length) throw new CliError(`unexpected arguments: ${extra.join(' ')}`);
    const c = clientFrom(ctx);
    const print = (r: RolloutView): void => (mode === 'json' ? out(`${JSON.stringify(r, null, 2)}\n`) : show(r, out));
    switch (sub) {
      case 'create': {
        const artifactId = str(values, 'artifact');
        if (!artifactId) throw new CliError('--artifact ID is required (an uploaded package: GET /api/artifacts)');
        const body: Record<string, unknown> = { artifactId };
        const selector = str(values, 'selector');
        if (selector !== undefined) body['selector'] = selector;
        const waves = strs(values, 'waves', true);
        if (waves.length) body['waves'] = waves.map(wave);
        const mf = str(values, 'max-failures');
        if (mf !== undefined) {
          if (!/^\d+$/.test(mf)) throw new CliError('--max-failures must be a count');
          body['maxFailures'] = Number(mf);
        }
        if (values['allow-downgrade']) body['allowDowngrade'] = true;
        print(await withSelector(selector, () => c.post<RolloutView>('/api/rollouts', body)));
        return;
      }
      case 'list': {
        const res = await c.get<{ items: RolloutView[] }>('/api/rollouts?limit=50');
        if (mode === 'json') return void out(`${JSON.stringify(res.items, null, 2)}\n`);
        out(table(['ID', 'STATE', 'VERSION', 'TARGETS', 'RESULTS', 'CREATED', 'SELECTOR'], res.items.map((r) => [
          r.id, r.state, r.version, String(r.total), countsText(r), r.createdAt, r.selector,
        ])));
        return;
      }
      case 'status':
      case 'pause':
      case 'resume':
      case 'cancel': {
        if (!id) throw new CliError(`usage: muster rollout ${sub} ID`);
        const p = `/api/rollouts/${encodeURIComponent(id)}`;
        if (sub !== 'status') await c.post(`${p}/${sub}`);
        print(await c.get<RolloutView>(p));
        return;
      }
      default:
        throw new CliError(sub ? `unknown rollout subcommand ${JSON.stringify(sub)}` : 'a subcommand is required: create, status, list, pause, resume or cancel');
    }
  },
};
