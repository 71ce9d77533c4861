import type { ApiToken as TokenView, ApiTokenCreated } from '../../protocol/index.js';
import { clientFrom } from '../client.js';
import { CliError, outputMode, posInt, str, type Command } from '../command.js';
import { table } from '../format.js';

/** `muster tokens [list|create NAME|revoke ID]`: API tokens (your own; an admin sees everyone's). */
export const tokens: Command = {
  name: 'tokens',
  summary: 'list, create or revoke API tokens',
  usage:
    'muster tokens [list] | muster tokens create NAME [--scope viewer|operator|admin] [--expires-in SEC] | muster tokens revoke ID   [--output table|json]',
  options: { scope: { type: 'string' }, 'expires-in': { type: 'string' } },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const mode = outputMode(values);
    const [sub = 'list', arg, ...extra] = positionals;
    if (extra.length) throw new CliError(`unexpected arguments: ${extra.join(' ')}`);
    const c = clientFrom(ctx);
    if (sub === 'list') {
      if (arg !== undefined) throw new CliError(`unexpected argument: ${arg}`);
      const res = await c.get<{ items: TokenView[] }>('/api/tokens');
      if (mode === 'json') return void out(`${JSON.stringify(res.items, null, 2)}\n`);
      out(
        table(
          ['ID', 'NAME', 'PREFIX', 'USER', 'SCOPE', 'CREATED', 'LAST USED', 'EXPIRES', 'REVOKED'],
          res.items.map((t) => [
            String(t.id),
            t.name,
            `${t.prefix}…`,
            t.username,
            t.scope ?? '-',
            t.createdAt,
            t.lastUsedAt ?? '-',
            t.expired ? 'expired' : (t.expiresAt ?? 'never'),
            t.revoked ? 'yes' : 'no',
          ]),
        ),
      );
      return;
    }
    if (sub === 'create') {
      const name = arg ?? str(values, 'name');
      if (!name) throw new CliError('usage: muster tokens create NAME');
      const scope = str(values, 'scope');
      if (scope !== undefined && !['viewer', 'operator', 'admin'].includes(scope))
        throw new CliError(`--scope must be viewer, operator or admin, got ${JSON.stringify(scope)}`);
      const expiresInSec = posInt(values, 'expires-in');
      const t = await c.post<ApiTokenCreated>('/api/tokens', {
        name,
        ...(scope ? { scope } : {}),
        ...(expiresInSec ? { expiresInSec } : {}),
      });
      // The secret is shown once, on stdout only, so it can be captured: TOKEN=$(muster tokens create ci -o json | jq -r .token)
      out(mode === 'json' ? `${JSON.stringify(t, null, 2)}\n` : `token ${t.id} ${JSON.stringify(t.name)} created; it is shown only now:\n${t.token}\n`);
      return;
    }
    if (sub === 'revoke') {
      if (!arg || !/^\d+$/.test(arg)) throw new CliError('usage: muster tokens revoke ID (the numeric id from `muster tokens`)');
      await c.delete(`/api/tokens/${arg}`);
      out(mode === 'json' ? `${JSON.stringify({ id: Number(arg), revoked: true })}\n` : `token ${arg} revoked\n`);
      return;
    }
    throw new CliError(`unknown tokens subcommand ${JSON.stringify(sub)}: list, create or revoke`);
  },
};
