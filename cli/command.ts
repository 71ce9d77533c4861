import type { ParseArgsConfig } from 'node:util';

/** A usage or input error: printed without a stack, exit status 2. */
export class CliError extends Error {}

/** What a command's `run` gets: parsed flags, positionals, output sinks and the environment. */
export interface CommandContext {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
  out(s: string): void;
  err(s: string): void;
  env: NodeJS.ProcessEnv;
}

/** One `muster <name>` subcommand; new ones register in cli/main.ts. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** Resolves to the exit status (0 when nothing is returned); throws CliError (2) or any other error (1). */
  run(ctx: CommandContext): Promise<void | number>;
}

/** A string flag's value, or undefined; a repeated flag keeps the last value. */
export function str(values: CommandContext['values'], name: string): string | undefined {
  const v = values[name];
  if (Array.isArray(v)) return str({ x: v[v.length - 1] }, 'x');
  return typeof v === 'string' ? v : undefined;
}

/** A positive integer flag, or undefined; anything else is a usage error. */
export function posInt(values: CommandContext['values'], name: string): number | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new CliError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return Number(v);
}
