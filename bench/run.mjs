// Benchmark dispatcher: `npm run bench -- <name> [flags]` runs bench/<name>.mjs with the flags.
// Without a name it lists the benchmarks.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [name, ...args] = process.argv.slice(2);
const available = fs.readdirSync(here).filter((f) => f.endsWith('.mjs') && f !== 'run.mjs').map((f) => f.slice(0, -4));
if (!name || !available.includes(name)) {
  process.stdout.write(`usage: npm run bench -- <${available.join('|')}> [flags]\n`);
  process.exit(name ? 2 : 0);
}
const r = spawnSync(process.execPath, [path.join(here, `${name}.mjs`), ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
