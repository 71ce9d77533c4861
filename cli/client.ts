import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CliError, type CommandContext } from './command.js';

/** What `muster login` stores: the server's base URL and an API token. */
export interface CliConfig {
  server: string;
  token: string;
}

/** The config file: MUSTER_CLI_CONFIG, else ~/.config/muster/cli.json (XDG_CONFIG_HOME respected). */
export function configPath(env: NodeJS.ProcessEnv): string {
  if (env['MUSTER_CLI_CONFIG']) return env['MUSTER_CLI_CONFIG'];
  const base = env['XDG_CONFIG_HOME'] || path.join(os.homedir(), '.config');
  return path.join(base, 'muster', 'cli.json');
}

/** Validates and normalises a server URL to `http(s)://host[:port][/prefix]` without a trailing slash. */
export function normaliseServer(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new CliError(`--server must be a URL like http://host:8080, got ${JSON.stringify(raw)}`);
  }
  if (u.protocol === 'ws:') u.protocol = 'http:';
  if (u.protocol === 'wss:') u.protocol = 'https:';
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CliError(`--server must be http:// or https://, got ${u.protocol}`);
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

/** Writes the config with mode 0600 (replacing any older file atomically). */
export function saveConfig(file: string, cfg: CliConfig): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
}

/** --server/--token win over MUSTER_SERVER/MUSTER_TOKEN, which win over the stored config; each may come from any place. */
export function loadConfig(env: NodeJS.ProcessEnv, flags: Partial<CliConfig> = {}): CliConfig {
  const file = configPath(env);
  let stored: Partial<CliConfig> = {};
  if (fs.existsSync(file)) {
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (parsed && typeof parsed === 'object') {
        const o = parsed as Record<string, unknown>;
        stored = { server: typeof o['server'] === 'string' ? o['server'] : undefined, token: typeof o['token'] === 'string' ? o['token'] : undefined };
      }
    } catch (err) {
      throw new Error(`cannot read ${file}: ${(err as Error).message}`);
    }
  }
  const server = flags.server || env['MUSTER_SERVER'] || stored.server;
  const token = flags.token || env['MUSTER_TOKEN'] || stored.token;
  if (!server || !token) throw new Error(`not logged in: run \`muster login --server URL --user NAME\` (or set MUSTER_SERVER and MUSTER_TOKEN)`);
  return { server: normaliseServer(server), token };
}

/** An error answer from the API: `{ error: { code, message, ... } }` with its HTTP status. */
export class ApiFailure extends Error {
  /** The selector the request carried, so a syntax error can point into it. */
  selector?: string;
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** A small REST client: JSON in and out, bearer token or session cookie, API errors as ApiFailure. */
export class Client {
  cookie = '';
  constructor(
    readonly server: string,
    private readonly token = '',
  ) {}

  /**
   * One API request. `body` is sent as JSON, unless `raw` gives the body (a stream is sent as it
   * is read, never whole in memory) and its headers.
   */
  async request(method: string, p: string, body?: unknown, raw?: { body: ReadableStream<Uint8Array>; headers: Record<string, string> }): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...raw?.headers };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.token) headers['authorization'] = `Bearer ${this.token}`;
    if (this.cookie) headers['cookie'] = this.cookie;
    let res: Response;
    try {
      res = await fetch(
        this.server + p,
        raw
          ? ({ method, headers, body: raw.body, duplex: 'half' } as RequestInit)
          : { method, headers, body: body === undefined ? undefined : JSON.stringify(body) },
      );
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`cannot reach ${this.server}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (!res.ok) {
      const text = await res.text();
      let e: Record<string, unknown> | undefined;
      try {
        const parsed = JSON.parse(text) as { error?: Record<string, unknown> };
        e = parsed.error;
      } catch {
        /* not JSON: fall through to the status text */
      }
      const { code, message, ...details } = e ?? {};
      throw new ApiFailure(
        res.status,
        typeof code === 'string' ? code : `http_${res.status}`,
        typeof message === 'string' ? message : `${res.status} ${res.statusText}${text ? `: ${text.slice(0, 200)}` : ''}`,
        details,
      );
    }
    return res;
  }

  async json<T>(method: string, p: string, body?: unknown): Promise<T> {
    const res = await this.request(method, p, body);
    return (res.status === 204 ? null : await res.json()) as T;
  }

  get<T>(p: string): Promise<T> {
    return this.json<T>('GET', p);
  }
  post<T>(p: string, body: unknown = {}): Promise<T> {
    return this.json<T>('POST', p, body);
  }
  delete<T>(p: string): Promise<T> {
    return this.json<T>('DELETE', p);
  }
  patch<T>(p: string, body: unknown): Promise<T> {
    return this.json<T>('PATCH', p, body);
  }

  /** The API token this client sends (the console socket authenticates with it too). */
  get bearer(): string {
    return this.token;
  }
}

/** The client for commands that need a logged-in user (flags, then environment, then stored login). */
export function clientFrom(ctx: Pick<CommandContext, 'env' | 'values'>): Client {
  const flag = (k: string): string | undefined => (typeof ctx.values[k] === 'string' ? ctx.values[k] : undefined);
  const cfg = loadConfig(ctx.env, { server: flag('server'), token: flag('token') });
  return new Client(cfg.server, cfg.token);
}

/** Turns an API error into lines for a person: code, message, and for selectors a caret under the position. */
export function describeApiFailure(e: ApiFailure): string {
  const selector = e.selector;
  let s = `${e.message} (${e.code}, HTTP ${e.status})`;
  const pos = e.details['position'];
  if (e.code === 'selector_syntax' && selector !== undefined && typeof pos === 'number') {
    s += `\n  ${selector}\n  ${' '.repeat(Math.min(pos, selector.length))}^`;
  }
  if (e.status === 401) s += '\n  (run `muster login` again, or check MUSTER_TOKEN)';
  return s;
}

/** Runs `fn`, tagging an API failure with the selector it sent. */
export async function withSelector<T>(selector: string | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ApiFailure) err.selector = selector;
    throw err;
  }
}
