// Builds the server, agent and CLI bundles with esbuild, and the console with Vite.
// `--agent-only` builds just dist/agent.js. MUSTER_AGENT_VERSION overrides the agent's version.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const agentOnly = process.argv.includes('--agent-only');
const skipWeb = process.argv.includes('--no-web') || process.env.MUSTER_SKIP_WEB_BUILD === '1';
const version = process.env.MUSTER_AGENT_VERSION || pkg.version;

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  logLevel: 'warning',
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
};
const entries = [{ in: 'agent/main.ts', out: 'dist/agent.js', agent: true }];
if (!agentOnly)
  entries.push(
    { in: 'server/main.ts', out: 'dist/server.js' },
    // The execution writer's thread (MySQL/MariaDB; server/exec/store-thread.ts), loaded next to dist/server.js.
    { in: 'server/exec/store-worker.ts', out: 'dist/exec-store-worker.js' },
    { in: 'cli/main.ts', out: 'dist/cli.js', cli: true },
  );
await Promise.all(
  entries
    .filter((e) => fs.existsSync(path.join(root, e.in)))
    .map((e) =>
      esbuild.build({
        ...common,
        entryPoints: [path.join(root, e.in)],
        outfile: path.join(root, e.out),
        // The agent bundles everything but node-pty (native); the CLI bundles everything (one file to copy
        // onto a laptop; ws's optional native add-ons stay out); the server keeps node_modules external.
        ...(e.agent
          ? { external: ['node-pty', 'bufferutil', 'utf-8-validate'] }
          : e.cli
            ? { external: ['bufferutil', 'utf-8-validate'] }
            : { packages: 'external' }),
        define: { __MUSTER_VERSION__: JSON.stringify(version) },
        // The CLI runs as a program on its own: `install -m 755 dist/cli.js ~/.local/bin/muster`.
        ...(e.cli ? { banner: { js: `#!/usr/bin/env node\n${common.banner.js}` } } : {}),
      }),
    ),
);
if (!agentOnly && fs.existsSync(path.join(root, 'dist', 'cli.js'))) fs.chmodSync(path.join(root, 'dist', 'cli.js'), 0o755);

if (!agentOnly && !skipWeb && fs.existsSync(path.join(root, 'web', 'index.html'))) {
  execFileSync(process.execPath, [path.join(root, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'warn'], {
    cwd: path.join(root, 'web'),
    stdio: 'inherit',
  });
  await precompress(path.join(root, 'web', 'dist', 'assets'));
}

/**
 * Writes brotli (.br) and gzip (.gz) copies of the console's text assets next to them, served by
 * server/http/static.ts to browsers that accept them (compressed once here, at the highest levels,
 * instead of on every response).
 */
async function precompress(dir) {
  if (!fs.existsSync(dir)) return;
  const { promisify } = await import('node:util');
  const zlib = await import('node:zlib');
  const brotli = promisify(zlib.brotliCompress);
  const gzip = promisify(zlib.gzip);
  const files = fs.readdirSync(dir).filter((f) => /\.(js|css|svg|json|txt|wasm|map)$/.test(f));
  await Promise.all(
    files.map(async (f) => {
      const data = fs.readFileSync(path.join(dir, f));
      if (data.length < 1024) return;
      const [br, gz] = await Promise.all([
        brotli(data, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length } }),
        gzip(data, { level: 9 }),
      ]);
      if (br.length < data.length * 0.9) fs.writeFileSync(path.join(dir, `${f}.br`), br);
      if (gz.length < data.length * 0.9) fs.writeFileSync(path.join(dir, `${f}.gz`), gz);
    }),
  );
}
