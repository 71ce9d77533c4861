import type { AgentView } from '../../protocol/index.js';
import { clientFrom, withSelector } from '../client.js';
import { CliError, outputMode, str, type Command } from '../command.js';
import { labelsText, table } from '../format.js';

/** `muster agents`: the fleet as a table or JSON. */
export const agents: Command = {
  name: 'agents',
  summary: 'list agents (name, status, hostname, version, labels)',
  usage: 'muster agents [--selector S] [--status online|offline] [--output table|json]',
  options: { selector: { type: 'string', short: 's' }, status: { type: 'string' } },
  run: async (ctx) => {
    const { values, out } = ctx;
    const mode = outputMode(values);
    const selector = str(values, 'selector');
    const status = str(values, 'status');
    if (status !== undefined && status !== 'online' && status !== 'offline') throw new CliError('--status must be online or offline');
    const c = clientFrom(ctx);
    const q = new URLSearchParams({ limit: '50000' });
    if (selector !== undefined) q.set('selector', selector);
    if (status) q.set('status', status);
    const res = await withSelector(selector, () => c.get<{ items: AgentView[]; total: number }>(`/api/agents?${q}`));
    if (mode === 'json') {
      out(`${JSON.stringify(res.items, null, 2)}\n`);
      return;
    }
    out(
      table(
        ['NAME', 'STATUS', 'HOSTNAME', 'VERSION', 'LABELS'],
        res.items.map((a) => [a.name, a.status, a.hostname, a.version, labelsText(a.labels)]),
      ),
    );
  },
};
