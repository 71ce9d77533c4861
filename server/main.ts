import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ResetPasswordError, resetPassword } from './admin/reset-password.js';
import { ConfigError, loadConfig, unknownVariables } from './config/config.js';
import { createLogger } from './log.js';
import { startServer } from './server.js';

/** Composition root: config, logger, server, signals. Does no work itself. */
async function main(): Promise<void> {
  if (process.argv[2] === 'reset-password') {
    try {
      await resetPassword(process.argv.slice(3), process.env, { stdin: process.stdin, out: (t) => process.stdout.write(t) });
      process.exit(0);
    } catch (err) {
      if (err instanceof ResetPasswordError || err instanceof ConfigError) {
        process.stderr.write(`muster: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
  }
  // Every file the server (and the local agent it starts) creates is private to its user: the
  // database, its WAL, artifacts, recordings and state hold secrets. Set before anything is opened.
  process.umask(0o077);
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`muster: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  // A variable the server does not read is said once, not accepted and ignored in silence.
  for (const { name, didYouMean } of unknownVariables(process.env)) {
    log.warn({ variable: name, didYouMean }, `unknown configuration variable ${name} ignored${didYouMean ? ` (did you mean ${didYouMean}?)` : ''}`);
  }
  const here = path.dirname(fileURLToPath(import.meta.url));
  const s = await startServer(config, log, { webDist: path.resolve(here, '..', 'web', 'dist'), agentScript: path.join(here, 'agent.js') });
  // The scheme the listener really speaks: TLS when a certificate is configured.
  const scheme = config.tlsCert ? 'https' : 'http';
  const consoleUrl = config.publicUrl ?? `${scheme}://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${s.port}`;
  const lines = [
    '',
    `  Muster is running: ${consoleUrl}`,
    s.generatedAdminPassword
      ? `  First start: user "admin", password "${s.generatedAdminPassword}" (shown once; change it)`
      : '  Sign in with your admin account.',
    s.enrollToken ? '' : '  Enroll agents with a token from Admin → Enrollment (the install command is there).',
    '',
  ].filter((l, i, a) => l !== '' || i === 0 || i === a.length - 1);
  process.stdout.write(`${lines.join('\n')}\n`);
  log.info({ scheme, port: s.port }, 'listening');

  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ sig }, 'shutting down');
    s.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A hangup (the terminal of `npm start` closed, a stray group signal) must not stop the server;
  // its configuration is read once at start, so there is nothing to reload.
  process.on('SIGHUP', () => log.warn({ sig: 'SIGHUP' }, 'SIGHUP ignored: configuration is read at start; restart the server to change it'));
}

main().catch((err: unknown) => {
  process.stderr.write(`muster: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
