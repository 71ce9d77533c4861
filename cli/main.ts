import { parseArgs } from 'node:util';
import { ApiFailure, describeApiFailure } from './client.js';
import { CliError, GLOBAL_OPTIONS, resolveTokenFlags, type Command } from './command.js';
import { agents } from './commands/agents.js';
import { completion } from './commands/completion.js';
import { exec } from './commands/exec.js';
import { files } from './commands/files.js';
import { keygen, signCmd } from './commands/keys.js';
import { login } from './commands/login.js';
import { rollout } from './commands/rollout.js';
import { schedules } from './commands/schedules.js';
import { scripts } from './commands/scripts.js';
import { cancel, task, tasks } from './commands/tasks.js';
import { term } from './commands/term.js';
import { tokens } from './commands/tokens.js';

declare const __MUSTER_VERSION__: string | undefined;
const VERSION = typeof __MUSTER_VERSION__ === 'string' ? __MUSTER_VERSION__ : '0.0.0-dev';

/** Every subcommand, in help order. Add new commands here. */
const COMMANDS: readonly Command[] = [
  login,
  agents,
  exec,
  tasks,
  task,
  cancel,
  term,
  scripts,
  schedules,
  files,
  rollout,
  tokens,
  keygen,
  signCmd,
  completion(() => COMMANDS),
];

function help(): string {
  const names = (c: Command): string => [c.name, ...(c.aliases ?? [])].join(', ');
  const w = Math.max(...COMMANDS.map((c) => names(c).length));
  return (
    `usage: muster <command> [options]\n\ncommands:\n${COMMANDS.map((c) => `  ${names(c).padEnd(w)}  ${c.summary}`).join('\n')}\n\n` +
    'every command: --server URL, --token-file PATH or --token - (stdin) (else MUSTER_SERVER / MUSTER_TOKEN, else `muster login`;\n' +
    '  --token TOKEN works but shows the token in ps), --output table|json (-o)\n' +
    "muster <command> --help shows a command's options.\n"
  );
}

/** `muster` CLI entry: dispatches to a subcommand. */
async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return name ? 0 : 2;
  }
  if (name === '--version') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
  if (!cmd) {
    process.stderr.write(`muster: unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: ${cmd.usage}\n`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: { ...GLOBAL_OPTIONS, ...cmd.options }, allowPositionals: true, strict: true });
    const err = (s: string): void => void process.stderr.write(s);
    resolveTokenFlags(values, err);
    const code = await cmd.run({ values, positionals, out: (s) => void process.stdout.write(s), err, env: process.env });
    return code ?? 0;
  } catch (err) {
    const usageError = err instanceof CliError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`muster ${cmd.name}: ${err instanceof ApiFailure ? describeApiFailure(err) : (err as Error).message}\n`);
    if (usageError) process.stderr.write(`usage: ${cmd.usage}\n`);
    return usageError ? 2 : 1;
  }
}

// Output is flushed before exiting (a pipe may still hold some of it when main resolves).
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    process.stdout.write('', () => process.exit(code));
  },
  (err: unknown) => {
    process.stderr.write(`muster: ${String(err)}\n`);
    process.exit(1);
  },
);
