import type { ParseArgsConfig } from 'node:util';

/** A usage or input error: printed without a stack, exit status 2. */
export class CliError extends Error {}

/** One `muster <name>` subcommand; new ones (login, agents, run, …) register in cli/main.ts. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(ctx: { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[]; out(s: string): void; env: NodeJS.ProcessEnv }): Promise<void>;
}
