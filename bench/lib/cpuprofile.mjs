// Summary of a V8 CPU profile (`node --cpu-prof`): where the samples went, by function (self and
// inclusive time) and by package or file, as plain text. Used by `--profile` of the benchmarks;
// also runnable on its own: node bench/lib/cpuprofile.mjs FILE.cpuprofile [TOP].
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

const short = (url) =>
  url
    .replace(/^file:\/\//, '')
    .replace(/.*node_modules\//, 'nm:')
    .replace(/.*\/dist\//, 'dist/');

/** Text summary of one .cpuprofile: the top `top` functions by self and inclusive time, and time per package/file. */
export function summarizeProfile(file, top = 25) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const self = new Map();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n) => `${n.callFrame.functionName || '(anonymous)'} ${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  let total = 0;
  const byFn = new Map();
  const byFile = new Map();
  const incl = new Map();
  for (const [id, t] of self) {
    total += t;
    const n = nodes.get(id);
    byFn.set(name(n), (byFn.get(name(n)) ?? 0) + t);
    const u = short(n.callFrame.url);
    const f = u.startsWith('nm:')
      ? u
          .split('/')
          .slice(0, u.startsWith('nm:@') ? 2 : 1)
          .join('/')
      : u || n.callFrame.functionName;
    byFile.set(f, (byFile.get(f) ?? 0) + t);
    // Inclusive: every distinct function on the sample's stack.
    const seen = new Set();
    for (let cur = id; cur != null; cur = parent.get(cur)) {
      const k = name(nodes.get(cur));
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + t);
    }
  }
  const table = (m, title, n) =>
    [
      `${title} (of ${(total / 1000).toFixed(0)} ms sampled)`,
      ...[...m]
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([k, t]) => `${((100 * t) / total).toFixed(1).padStart(6)}% ${(t / 1000).toFixed(0).padStart(7)} ms  ${k}`),
    ].join('\n');
  return [table(byFile, 'self time by package/file', 15), table(byFn, 'self time by function', top), table(incl, 'inclusive time by function', top)].join(
    '\n\n',
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${summarizeProfile(process.argv[2], Number(process.argv[3] ?? 25))}\n`);
}
