import fs from 'node:fs';
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
  /** Other names that run this command (`run` for `exec`). */
  aliases?: string[];
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

/** Options every command accepts: where the server is, who we are, and how to print. */
export const GLOBAL_OPTIONS: NonNullable<ParseArgsConfig['options']> = {
  server: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  output: { type: 'string', short: 'o' },
  json: { type: 'boolean' },
};

/** Longest token file (or stdin) read for --token-file / --token - (API tokens are ~50 characters). */
const MAX_TOKEN_INPUT = 64 * 1024;

/** The first line of a token source, trimmed; empty or unreadable is a usage error. */
function firstLine(read: () => string, what: string): string {
  let text: string;
  try {
    text = read();
  } catch (err) {
    throw new CliError(`cannot read the token from ${what}: ${(err as Error).message}`);
  }
  const line = (text.slice(0, MAX_TOKEN_INPUT).split(/\r?\n/)[0] ?? '').trim();
  if (!line) throw new CliError(`no token in ${what}`);
  return line;
}

/**
 * Resolves `--token-file PATH` and `--token -` (stdin) into `values.token`. A literal `--token`
 * still works, but the command line is visible to every user of the host (ps, /proc), so it warns
 * on stderr and names the ways that are not.
 */
export function resolveTokenFlags(
  values: CommandContext['values'],
  err: (s: string) => void,
  io: { stdin: () => string; file: (p: string) => string } = {
    stdin: () => fs.readFileSync(0, 'utf8'),
    file: (p) => fs.readFileSync(p, 'utf8'),
  },
): void {
  const file = str(values, 'token-file');
  const token = str(values, 'token');
  if (file !== undefined && token !== undefined) throw new CliError('give either --token or --token-file, not both');
  if (file !== undefined) {
    values['token'] = file === '-' ? firstLine(io.stdin, 'stdin') : firstLine(() => io.file(file), file);
  } else if (token === '-') {
    values['token'] = firstLine(io.stdin, 'stdin');
  } else if (token !== undefined) {
    err(
      'muster: warning: --token puts the token on the command line, visible to other users (ps); use MUSTER_TOKEN, --token-file PATH, --token - (stdin) or `muster login`\n',
    );
  }
  delete values['token-file'];
}

/** `--output table|json` (`--json` is short for `--output json`); table by default. */
export function outputMode(values: CommandContext['values']): 'table' | 'json' {
  const o = str(values, 'output');
  if (o !== undefined && o !== 'table' && o !== 'json') throw new CliError(`--output must be table or json, got ${JSON.stringify(o)}`);
  return values['json'] === true || o === 'json' ? 'json' : 'table';
}

/** A repeatable string flag's values (each may also hold a comma-separated list when `split`). */
export function strs(values: CommandContext['values'], name: string, split = false): string[] {
  const v = values[name];
  const list = (Array.isArray(v) ? v : v === undefined ? [] : [v]).filter((x): x is string => typeof x === 'string');
  return split
    ? list
        .flatMap((x) => x.split(','))
        .map((x) => x.trim())
        .filter(Boolean)
    : list;
}

/** `K=V` pairs (repeatable flag) as an object; a pair without `=` is a usage error. */
export function pairs(values: CommandContext['values'], name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of strs(values, name)) {
    const i = p.indexOf('=');
    if (i < 1) throw new CliError(`--${name} takes NAME=VALUE, got ${JSON.stringify(p)}`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}
