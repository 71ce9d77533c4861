// File distribution benchmark, against the real server (dist/server.js) and the simulated fleet.
//
// One managed file of --mb MB (default 10) uploaded (streamed), then distributed to --agents
// simulated agents (default 1,000) in one wave: time from `POST /api/files/:id/distributions` until
// every host reported `applied`, and server RSS growth during the distribution (peak RSS minus RSS
// just before it), against the target "under 2 × the file size" above the baseline.
//
//   npm run bench -- files [--agents 1000] [--mb 10] [--no-write]
//
// Results are added to bench/RESULTS.md as a dated subsection of "## Files".
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startFleet } from './sim/fleet.mjs';
import { cpuSeconds, ROOT, rssBytes, scrape, sleep, startMusterServer } from './lib/proc.mjs';

const { values: flags } = parseArgs({
  options: {
    agents: { type: 'string', default: '1000' },
    mb: { type: 'string', default: '10' },
    'no-write': { type: 'boolean', default: false },
  },
});
const N = Number(flags.agents);
const SIZE = Math.round(Number(flags.mb) * 1_000_000);
const RECEIVER = path.join(ROOT, 'bench', 'sim', 'file-receiver.mjs');
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const outDir = path.join(ROOT, 'bench', 'out', `files-${stamp}`);
fs.mkdirSync(outDir, { recursive: true });
const log = (...a) => process.stdout.write(`${a.join(' ')}\n`);

const load0 = os.loadavg()[0];
const server = await startMusterServer({ dataDir: path.join(outDir, 'data'), env: { MUSTER_FILE_MAX_BYTES: String(Math.max(SIZE, 1024)) } });
let result;
let fleet;
try {
  const login = await fetch(`${server.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: 'bench-password-123' }),
  });
  const cookie = login.headers.get('set-cookie').split(';')[0];
  const call = async (method, p, body, headers = { 'content-type': 'application/json' }) => {
    const res = await fetch(server.url + p, { method, headers: { ...headers, cookie }, body, duplex: 'half' });
    const j = await res.json();
    if (res.status >= 300) throw new Error(`${p}: ${res.status} ${JSON.stringify(j)}`);
    return j;
  };

  fleet = await startFleet({
    url: server.wsUrl,
    enrollToken: server.enrollToken,
    count: N,
    credsDir: path.join(outDir, 'creds'),
    idPrefix: 'f',
    handlerModules: [RECEIVER],
  });
  await fleet.waitConnected(N);
  log(`${N} simulated agents connected`);

  const file = await call('POST', '/api/files', JSON.stringify({ path: '/etc/bench/blob.bin', mode: '0644' }));
  const content = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4096) content.writeUInt32BE(i, i);
  const src = path.join(outDir, 'blob.bin');
  fs.writeFileSync(src, content);
  const { Readable } = await import('node:stream');
  const rev = await call('POST', `/api/files/${file.id}/revisions`, Readable.toWeb(fs.createReadStream(src)), {
    'content-type': 'application/octet-stream',
    'content-length': String(SIZE),
  });
  log(`revision ${rev.revision}: ${rev.size} bytes`);

  await sleep(2000);
  // Where the memory is: V8 heap vs buffers outside it (external: ArrayBuffers), from /metrics.
  const HEAP = 'muster_process_nodejs_heap_size_used_bytes',
    EXT = 'muster_process_nodejs_external_memory_bytes';
  const m0 = await scrape(`${server.url}/metrics`);
  const mem = { heap0: m0.get(HEAP) ?? 0, ext0: m0.get(EXT) ?? 0, heapPeak: m0.get(HEAP) ?? 0, extPeak: m0.get(EXT) ?? 0 };
  const rss0 = rssBytes(server.pid);
  let peak = rss0;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, rssBytes(server.pid));
    } catch {
      /* gone */
    }
  }, 50);
  let scraping = false;
  const memSampler = setInterval(() => {
    if (scraping) return;
    scraping = true;
    scrape(`${server.url}/metrics`)
      .then(
        (m) => {
          mem.heapPeak = Math.max(mem.heapPeak, m.get(HEAP) ?? 0);
          mem.extPeak = Math.max(mem.extPeak, m.get(EXT) ?? 0);
        },
        () => {},
      )
      .finally(() => {
        scraping = false;
      });
  }, 500);
  const c0 = cpuSeconds(server.pid);
  const t0 = performance.now();
  const d = await call('POST', `/api/files/${file.id}/distributions`, JSON.stringify({ targets: { selector: 'all' } }));
  let view;
  for (;;) {
    view = await call('GET', `/api/distributions/${d.id}`, undefined, {});
    if (!['running', 'paused'].includes(view.state)) break;
    await sleep(1000); // a console-like poll (the full view: 1,000 targets); faster polling is the API's load, not the transfer's
  }
  const secs = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  clearInterval(memSampler);
  const cpu = cpuSeconds(server.pid) - c0;
  const m1 = await scrape(`${server.url}/metrics`);
  const applied = view.counts.applied ?? 0;
  result = {
    agents: N,
    bytes: SIZE,
    state: view.state,
    applied,
    secs,
    mbPerSec: (applied * SIZE) / 1e6 / secs,
    rssBeforeMB: rss0 / 2 ** 20,
    rssPeakMB: peak / 2 ** 20,
    rssGrowthMB: (peak - rss0) / 2 ** 20,
    cpuPct: (cpu / secs) * 100,
    load0,
    load1: os.loadavg()[0],
    cores: os.cpus().length,
    heapGrowthMB: (mem.heapPeak - mem.heap0) / 2 ** 20,
    extGrowthMB: (mem.extPeak - mem.ext0) / 2 ** 20,
    readMB: (m1.get('muster_file_bytes_total{kind="read"}') ?? NaN) / 1e6,
    sentMB: (m1.get('muster_file_bytes_total{kind="sent"}') ?? NaN) / 1e6,
  };
  log(
    `distribution ${view.state}: ${applied}/${N} applied in ${secs.toFixed(1)} s (${result.mbPerSec.toFixed(0)} MB/s to the fleet); ` +
      `server RSS ${result.rssBeforeMB.toFixed(0)} → peak ${result.rssPeakMB.toFixed(0)} MB (+${result.rssGrowthMB.toFixed(1)} MB; target < ${((2 * SIZE) / 2 ** 20).toFixed(1)} MB); ` +
      `server CPU ${result.cpuPct.toFixed(0)}% of a core; load ${load0.toFixed(1)} → ${result.load1.toFixed(1)}`,
  );
  log(
    `  peak growth sampled every 0.5 s: V8 heap used +${result.heapGrowthMB.toFixed(1)} MB, external (buffers) +${result.extGrowthMB.toFixed(1)} MB; ` +
      `content read from disk ${result.readMB.toFixed(1)} MB for ${result.sentMB.toFixed(0)} MB sent`,
  );
} finally {
  await fleet?.stop();
  fs.writeFileSync(path.join(outDir, 'server.log'), server.output());
  await server.stop();
}

if (result && !flags['no-write']) {
  const r = result;
  const section = [
    `### ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC (${r.cores} cores, load average ${r.load0.toFixed(1)} → ${r.load1.toFixed(1)})`,
    '',
    `\`npm run bench -- files --agents ${r.agents} --mb ${r.bytes / 1e6}\`: one ${r.bytes / 1e6} MB revision to ${r.agents} simulated agents in one wave`,
    '(one process on the same machine; each agent acknowledges every FILE_DATA frame as the real agent does after writing it).',
    '',
    '| hosts applied | time until all applied | to the fleet | server RSS before | peak | growth | target (2 × file) | heap / external growth | read from disk | server CPU |',
    '|---|---|---|---|---|---|---|---|---|---|',
    `| ${r.applied}/${r.agents} (${r.state}) | ${r.secs.toFixed(1)} s | ${r.mbPerSec.toFixed(0)} MB/s | ${r.rssBeforeMB.toFixed(0)} MB | ${r.rssPeakMB.toFixed(0)} MB | ${r.rssGrowthMB.toFixed(1)} MB | ${((2 * r.bytes) / 2 ** 20).toFixed(1)} MB | +${r.heapGrowthMB.toFixed(1)} / +${r.extGrowthMB.toFixed(1)} MB | ${r.readMB.toFixed(1)} MB | ${r.cpuPct.toFixed(0)}% of a core |`,
    '',
  ].join('\n');
  const file = path.join(ROOT, 'bench', 'RESULTS.md');
  let text = fs.readFileSync(file, 'utf8');
  const intro =
    '## Files\n\nServer memory is bounded by MUSTER_FILE_INFLIGHT_BYTES (unacknowledged bytes of all transfers together, 8 MiB by default), not by the number of hosts: content is read from disk chunk by chunk as acknowledgements free room.\n\n';
  if (!text.includes('\n## Files\n')) text = `${text.trimEnd()}\n\n${intro}`;
  text = text.replace(/\n## Files\n\n[^\n]*\n\n/, (m) => `${m}${section}\n`);
  fs.writeFileSync(file, text);
  log('wrote the ## Files section of bench/RESULTS.md');
}
process.exit(result?.state === 'succeeded' ? 0 : 1);
