import fs from 'node:fs';
import { Readable } from 'node:stream';
import type { DistributionView, FileHostView, FileRevisionView, ManagedFileView } from '../../protocol/index.js';
import { clientFrom, withSelector, type Client } from '../client.js';
import { CliError, outputMode, posInt, str, type Command } from '../command.js';
import { table } from '../format.js';
import { FINAL_RUN_STATES, showWaveRun, WAVE_OPTIONS, waveBody } from '../waves.js';

type FileDetail = ManagedFileView & { revisions: FileRevisionView[]; hosts: FileHostView[]; distributions: DistributionView[] };

function showDistribution(d: DistributionView, out: (s: string) => void): void {
  showWaveRun('distribution', d, `${d.kind} revision ${d.revision}`, out, { unit: 'host' });
}

/** A managed file by id or by its destination path. */
async function findFile(c: Client, ref: string): Promise<ManagedFileView | null> {
  if (!ref.startsWith('/')) return c.get<ManagedFileView>(`/api/files/${encodeURIComponent(ref)}`);
  const res = await c.get<{ items: ManagedFileView[] }>(`/api/files?q=${encodeURIComponent(ref)}&limit=1000`);
  return res.items.find((f) => f.path === ref) ?? null;
}

async function mustFile(c: Client, ref: string | undefined): Promise<ManagedFileView> {
  if (!ref) throw new CliError('name the managed file: its id or its destination path');
  const f = await findFile(c, ref);
  if (!f) throw new CliError(`no managed file ${ref}`);
  return f;
}

/** Polls a distribution until it ends (or pauses); exit status 0 only when it succeeded. */
async function wait(c: Client, id: string, out: (s: string) => void, json: boolean): Promise<number> {
  let d = await c.get<DistributionView>(`/api/distributions/${id}`);
  while (!FINAL_RUN_STATES.has(d.state) && d.state !== 'paused' && d.state !== 'awaiting_approval') {
    await new Promise((r) => setTimeout(r, 500));
    d = await c.get<DistributionView>(`/api/distributions/${id}`);
  }
  if (json) out(`${JSON.stringify(d, null, 2)}\n`);
  else showDistribution(d, out);
  return d.state === 'succeeded' ? 0 : 1;
}

/** `muster files list|upload|distribute|status|rollback`: managed files with revisions. */
export const files: Command = {
  name: 'files',
  summary: 'managed files: list, upload, distribute, status, rollback',
  usage:
    'muster files list\n' +
    '       muster files upload LOCAL_FILE --path DEST [--owner U] [--group G] [--mode 0644] [--post-command CMD]\n' +
    '       muster files distribute FILE --selector S [--revision N] [--waves 1,10%,100%] [--max-failures N] [--soak SECONDS] [--approval] [--wait]\n' +
    '       muster files status FILE | --distribution ID\n' +
    '       muster files rollback FILE [--revision N] [--selector S] [--wait]\n' +
    "  FILE is a managed file's id or destination path",
  options: {
    path: { type: 'string' },
    owner: { type: 'string' },
    group: { type: 'string' },
    mode: { type: 'string' },
    'post-command': { type: 'string' },
    selector: { type: 'string', short: 's' },
    revision: { type: 'string' },
    ...WAVE_OPTIONS,
    wait: { type: 'boolean' },
    distribution: { type: 'string' },
  },
  run: async (ctx) => {
    const { values, positionals, out } = ctx;
    const json = outputMode(values) === 'json';
    const [sub, ref, ...extra] = positionals;
    if (extra.length) throw new CliError(`unexpected arguments: ${extra.join(' ')}`);
    const c = clientFrom(ctx);
    switch (sub) {
      case 'list': {
        const res = await c.get<{ items: ManagedFileView[] }>('/api/files?limit=1000');
        if (json) return void out(`${JSON.stringify(res.items, null, 2)}\n`);
        out(
          table(
            ['ID', 'PATH', 'REV', 'OWNER', 'MODE', 'HOSTS', 'DRIFTED'],
            res.items.map((f) => [
              f.id,
              f.path,
              String(f.latestRevision),
              `${f.owner ?? '-'}:${f.group ?? '-'}`,
              f.mode.toString(8).padStart(4, '0'),
              String(f.hostCount),
              String(f.driftedCount),
            ]),
          ),
        );
        return;
      }
      case 'upload': {
        if (!ref) throw new CliError('the local file to upload is required');
        const dest = str(values, 'path');
        if (!dest) throw new CliError('--path DEST (the destination on the hosts) is required');
        const st = fs.statSync(ref);
        let f = await findFile(c, dest);
        if (!f) {
          const body: Record<string, unknown> = { path: dest };
          for (const [flag, key] of [
            ['owner', 'owner'],
            ['group', 'group'],
            ['mode', 'mode'],
            ['post-command', 'postCommand'],
          ] as const) {
            const v = str(values, flag);
            if (v !== undefined) body[key] = v;
          }
          f = await c.post<ManagedFileView>('/api/files', body);
        } else if (['owner', 'group', 'mode', 'post-command'].some((k) => str(values, k) !== undefined)) {
          throw new CliError(`${dest} is already managed; change its owner, group, mode or post-command with PATCH /api/files/${f.id}`);
        }
        // Streamed from disk: the file is never read whole into memory.
        const res = await c.request('POST', `/api/files/${f.id}/revisions`, undefined, {
          body: Readable.toWeb(fs.createReadStream(ref)) as ReadableStream<Uint8Array>,
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(st.size) },
        });
        const rev = (await res.json()) as FileRevisionView;
        if (json) return void out(`${JSON.stringify({ file: f, revision: rev }, null, 2)}\n`);
        out(`${f.path} (${f.id}): revision ${rev.revision}, ${rev.size} bytes, sha256 ${rev.sha256}\n`);
        return;
      }
      case 'distribute':
      case 'rollback': {
        const f = await mustFile(c, ref);
        const body: Record<string, unknown> = {};
        const selector = str(values, 'selector');
        if (selector !== undefined) body['targets'] = { selector };
        else if (sub === 'distribute') throw new CliError('--selector S is required (e.g. all, or labels.role == "web")');
        const revision = posInt(values, 'revision');
        if (revision !== undefined) body['revision'] = revision;
        waveBody(values, body);
        const d = await withSelector(selector, () => c.post<DistributionView>(`/api/files/${f.id}/${sub === 'rollback' ? 'rollback' : 'distributions'}`, body));
        if (values['wait']) return wait(c, d.id, out, json);
        if (json) return void out(`${JSON.stringify(d, null, 2)}\n`);
        showDistribution(d, out);
        return;
      }
      case 'status': {
        const distribution = str(values, 'distribution');
        if (distribution) {
          const d = await c.get<DistributionView>(`/api/distributions/${encodeURIComponent(distribution)}`);
          if (json) return void out(`${JSON.stringify(d, null, 2)}\n`);
          showDistribution(d, out);
          return;
        }
        const f = await c.get<FileDetail>(`/api/files/${(await mustFile(c, ref)).id}`);
        if (json) return void out(`${JSON.stringify(f, null, 2)}\n`);
        out(
          `${f.path} (${f.id}) ${f.owner ?? '-'}:${f.group ?? '-'} ${f.mode.toString(8).padStart(4, '0')}, latest revision ${f.latestRevision}, ${f.hostCount} host(s), ${f.driftedCount} drifted\n\n`,
        );
        out(
          table(
            ['REV', 'SIZE', 'SHA256', 'BY', 'AT'],
            f.revisions.map((r) => [String(r.revision), String(r.size), r.sha256.slice(0, 16), r.createdBy, r.createdAt]),
          ),
        );
        if (f.hosts.length) {
          out('\n');
          out(
            table(
              ['HOST', 'REV', 'STATE', 'REASON'],
              f.hosts.map((h) => [h.agentName ?? h.agentId, String(h.revision), h.state, h.reason ?? '']),
            ),
          );
        }
        return;
      }
      default:
        throw new CliError(sub ? `unknown files subcommand ${JSON.stringify(sub)}` : 'a subcommand is required: list, upload, distribute, status or rollback');
    }
  },
};
