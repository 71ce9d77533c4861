// `npm run bench -- <name> [args]` runs bench/<name>.mjs; with no name, lists them.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';

const here = path.dirname(fileURLToPath(import.meta.url));
const NOT_BENCHES = new Set(['run', 'bare-server']);
const names = fs
  .readdirSync(here)
  .filter((f) => f.endsWith('.mjs'))
  .map((f) => f.slice(0, -4))
  .filter((n) => !NOT_BENCHES.has(n))
  .sort();
const [name, ...rest] = process.argv.slice(2);
if (!name || !names.includes(name)) {
  if (name) process.stderr.write(`unknown benchmark ${JSON.stringify(name)}\n`);
  process.stdout.write(`usage: npm run bench -- <name> [args]\nbenchmarks:\n${names.map((n) => `  ${n}`).join('\n')}\n`);
  process.exit(name ? 2 : 0);
}
const r = spawnSync(process.execPath, [path.join(here, `${name}.mjs`), ...rest], { stdio: 'inherit' });
process.exit(r.status ?? 1);
