import type { RolloutView } from '../../protocol/index.js';
import { clientFrom, withSelector } from '../client.js';
import { CliError, outputMode, str, type Command } from '../command.js';
import { countsText, table } from '../format.js';
import { showWaveRun, WAVE_OPTIONS, waveBody } from '../waves.js';

function show(r: RolloutView, out: (s: string) => void): void {
  showWaveRun('rollout', r, `version ${r.version}`, out, {
    unit: 'target',
    waves: r.waves.length,
    extra: { header: 'FROM', cell: (i) => r.targets?.[i]?.fromVersion ?? '-' },
  });
}

/** `muster rollout create|status|list|pause|resume|cancel`: batch agent updates in waves. */
export const rollout: Command = {
  name: 'rollout',
  summary: 'agent updates in waves: create, status, list, pause, resume, approve, cancel',
  usage:
    'muster rollout create --artifact ID [--selector S] [--waves 1,10%,100%] [--max-failures N] [--soak SECONDS] [--approval] [--allow-downgrade]\n' +
    '       muster rollout status ID | list | pause ID | resume ID | approve ID | cancel ID   [--output table|json]',
  options: {
    artifact: { type: 'string' },
    selector: { type: 'string', short: 's' },
    ...WAVE_OPTIONS,
    'allow-downgrade': { type: 'boolean' },
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
        waveBody(values, body);
        if (values['allow-downgrade']) body['allowDowngrade'] = true;
        print(await withSelector(selector, () => c.post<RolloutView>('/api/rollouts', body)));
        return;
      }
      case 'list': {
        const res = await c.get<{ items: RolloutView[] }>('/api/rollouts?limit=50');
        if (mode === 'json') return void out(`${JSON.stringify(res.items, null, 2)}\n`);
        out(
          table(
            ['ID', 'STATE', 'VERSION', 'TARGETS', 'RESULTS', 'CREATED', 'SELECTOR'],
            res.items.map((r) => [r.id, r.state, r.version, String(r.total), countsText(r), r.createdAt, r.selector]),
          ),
        );
        return;
      }
      case 'status':
      case 'pause':
      case 'resume':
      case 'approve':
      case 'cancel': {
        if (!id) throw new CliError(`usage: muster rollout ${sub} ID`);
        const p = `/api/rollouts/${encodeURIComponent(id)}`;
        if (sub !== 'status') await c.post(`${p}/${sub}`);
        print(await c.get<RolloutView>(p));
        return;
      }
      default:
        throw new CliError(
          sub ? `unknown rollout subcommand ${JSON.stringify(sub)}` : 'a subcommand is required: create, status, list, pause, resume, approve or cancel',
        );
    }
  },
};
