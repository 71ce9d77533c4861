import { parseArgs } from 'node:util';
import { ApiFailure, describeApiFailure } from './client.js';
import { CliError, type Command } from './command.js';
import { agents } from './commands/agents.js';
import { keygen, signCmd } from './commands/keys.js';
import { login } from './commands/login.js';
import { run, task, tasks } from './commands/tasks.js';

/** Every subcommand, in help order. Add new commands here. */
const COMMANDS: readonly Command[] = [login, agents, run, tasks, task, keygen, signCmd];

function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return `usage: muster <command> [options]\n\ncommands:\n${COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`).join('\n')}\n\nmuster <command> --help shows a command's options.\n`;
}

/** `muster` CLI entry: dispatches to a subcommand. */
async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`muster: unknown command ${JSON.stringify(name)}\n\n${help()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: ${cmd.usage}\n`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    const code = await cmd.run({ values, positionals, out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s), env: process.env });
    return code ?? 0;
  } catch (err) {
    const usageError = err instanceof CliError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`muster ${cmd.name}: ${err instanceof ApiFailure ? describeApiFailure(err) : (err as Error).message}\n`);
    if (usageError) process.stderr.write(`usage: ${cmd.usage}\n`);
    return usageError ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`muster: ${String(err)}\n`);
  process.exit(1);
});
