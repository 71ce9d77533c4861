import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import {
  DEFAULT_BULK_WINDOW,
  DEFAULT_BULK_WRITE_THRESHOLD,
  Labels,
  TERM_HIGH_WATERMARK,
  TERM_HIGH_WATERMARK_MAX,
  TERM_LOW_WATERMARK,
} from '../protocol/index.js';
import { DEFAULT_POLICY_PATH } from './policy.js';

/** Agent settings: defaults < config file < MUSTER_AGENT_* environment < flags. */
const Schema = z.object({
  /** One server URL, or several comma-separated (cluster nodes): rotated through on failure. */
  server: z
    .string()
    .refine((v) => v.split(',').every((u) => /^wss?:\/\/\S+$/.test(u.trim())), 'server must be a ws:// or wss:// URL, or several separated by commas'),
  token: z.string().optional(),
  stateDir: z.string().min(1).default('/var/lib/muster-agent'),
  name: z.string().min(1).max(255).default(os.hostname()),
  labels: Labels.default({}),
  caFile: z.string().optional(),
  /**
   * Local health endpoint port on 127.0.0.1 (0 picks a free one and logs it, -1 disables). Parsed
   * strictly: z.coerce would turn "" or " " into 0 and silently pick a random port.
   */
  healthPort: z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      const n = typeof v === 'number' ? v : /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
      if (Number.isInteger(n)) return n;
      ctx.addIssue({ code: 'custom', message: `must be a whole number: a port 1-65535, 0 for a free port, or -1 to disable (got ${JSON.stringify(v)})` });
      return z.NEVER;
    })
    .pipe(z.number().min(-1, 'must be a port 1-65535, 0 for a free port, or -1 to disable').max(65535, 'must be at most 65535'))
    .default(7878),
  /** /health answers 503 once the server has been unreachable this long. */
  unreachableAfterSec: z.coerce.number().int().min(1).default(60),
  /** Reconnect backoff: first delay and cap (exponential, full jitter). */
  backoffInitialMs: z.coerce.number().int().min(10).default(1000),
  backoffMaxMs: z.coerce.number().int().min(10).default(60_000),
  /** After the server closed for shutdown (a restart): backoff cap, and for how long it applies. */
  restartBackoffMaxMs: z.coerce.number().int().min(10).default(3000),
  restartWindowMs: z.coerce.number().int().min(0).default(60_000),
  /** Shell for terminals (default: the agent user's login shell). */
  shell: z.string().optional(),
  /**
   * HOME (and starting directory) of terminals opened as the agent's own user (default: that user's
   * home from /etc/passwd). Lets a host, or a test, keep the service user's dotfiles out of terminals.
   */
  terminalHome: z.string().min(1).optional(),
  /** User terminals run as (default: the agent's own user); another user needs a root agent. */
  terminalUser: z.string().min(1).max(64).optional(),
  /** Terminal sessions one agent hosts at once; more are refused. */
  terminalMaxSessions: z.coerce.number().int().min(1).max(1024).default(16),
  /** A terminal with no input and no output for this long is closed. */
  terminalIdleTimeoutSec: z.coerce
    .number()
    .int()
    .min(1)
    .default(30 * 60),
  /**
   * Flow control: unacknowledged output bytes above which the PTY is paused, and below which it
   * resumes (defaults and the relations they keep: protocol/flow-control.ts).
   */
  terminalHighWatermark: z.coerce.number().int().min(1024).max(TERM_HIGH_WATERMARK_MAX).default(TERM_HIGH_WATERMARK),
  terminalLowWatermark: z.coerce.number().int().min(0).default(TERM_LOW_WATERMARK),
  /**
   * Bulk output (a flowing terminal, script output) is handed to the server socket only while it
   * holds fewer bytes than this; echoes, prompts and heartbeats go ahead of the rest.
   */
  bulkWriteThreshold: z.coerce.number().int().min(1024).default(DEFAULT_BULK_WRITE_THRESHOLD),
  /** Bulk the server may have unread (kernel buffers included; answered by WebSocket pings); 0 = unbounded. */
  bulkWindow: z.coerce.number().int().min(0).default(DEFAULT_BULK_WINDOW),
  /**
   * Host policy file (terminals, exec, interpreters, runAs, signed scripts, allowed paths). Set
   * only here, by MUSTER_AGENT_POLICY or by --policy: never by the server. Re-read on SIGHUP.
   */
  policy: z.string().min(1).default(DEFAULT_POLICY_PATH),
  /** ed25519 public key (PEM or base64 raw) that signs agent packages. */
  updatePublicKey: z.string().optional(),
  /** Install root holding releases/ and current (set by the launcher). */
  installRoot: z.string().optional(),
  /**
   * A freshly updated agent that is not welcomed by the server within this many seconds exits 1,
   * so the launcher counts a failed start (and rolls back after a few): a version that starts but
   * cannot talk to the server does not strand the host.
   */
  updateConfirmSec: z.coerce.number().int().min(1).default(90),
  /**
   * Before switching to a new version, wait up to this long for running executions to finish
   * (a self-update restarts the agent, and the agent stops its executions when it stops).
   */
  updateDrainSec: z.coerce.number().int().min(0).default(60),
  /** Fault injection for tests only: SIGKILL itself at this step of an update. Unset in production. */
  updateCrashAt: z.enum(['downloading', 'verifying', 'installing', 'marker', 'swapped']).optional(),
  logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  /** How often managed files are checked for drift (stat; a hash only when size, mtime or inode changed). */
  fileCheckSec: z.coerce.number().min(0.1).default(60),
  /**
   * Directory managed file paths are resolved under (default: none, `/etc/app.conf` is written
   * there). For an agent in a container that manages its host mounted at, say, /host. The host
   * policy's allowedPaths apply to the managed path, before this prefix.
   */
  fileRoot: z.string().regex(/^\//, 'fileRoot must be absolute').optional(),
  /** Executions: SIGTERM → SIGKILL grace on timeout/cancel, and output kept per execution for resends. */
  execKillGraceSec: z.coerce.number().min(0).default(5),
  execBufferBytes: z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .default(16 * 1024 * 1024),
  /**
   * Script output waiting on the server socket: above execHighWaterBytes the running scripts'
   * pipes are paused (a script blocks on its next write), below execLowWaterBytes they resume.
   */
  execHighWaterBytes: z.coerce
    .number()
    .int()
    .min(64 * 1024)
    .default(1024 * 1024),
  execLowWaterBytes: z.coerce
    .number()
    .int()
    .min(0)
    .default(256 * 1024),
  /** Script output is sent in chunks of at most this many bytes (or what 5 ms gathered, if less). */
  execOutputChunkBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(32 * 1024),
  /**
   * Largest WebSocket message accepted from the server; a larger one closes the connection (1009).
   * Keep it above the server's largest: a FILE_DATA frame (MUSTER_FILE_CHUNK_BYTES, at most 4 MiB)
   * and an exec.run with its script (MUSTER_MAX_SCRIPT_BYTES, JSON-escaped).
   */
  maxPayload: z.coerce
    .number()
    .int()
    .min(8 * 1024 * 1024)
    .default(64 * 1024 * 1024),
  /**
   * On SIGTERM (systemctl stop/restart) or a restart request, running scripts get this long to
   * finish; then they are cancelled (reason `agent stopping`, SIGTERM, SIGKILL after
   * execKillGraceSec) and their results reported. Keep drain + grace + report under the unit's
   * TimeoutStopSec (30 s).
   */
  execStopDrainSec: z.coerce.number().min(0).default(10),
  /** Then how long the agent waits for the server to acknowledge those results before it exits (unacknowledged ones stay journaled). */
  execStopReportSec: z.coerce.number().min(0).default(5),
  /**
   * Execution ids kept in the on-disk journal (a repeated exec.run for one of them is never run
   * again); compacted to the newest this many when it holds twice as many.
   */
  execJournalKeep: z.coerce.number().int().min(1000).default(50_000),
  /**
   * Terminal downloads (a file from the shell's directory): payload bytes per FILE_DATA frame, and
   * bytes sent and not yet acknowledged by the server (bounds the server's memory per download).
   * A chunk stays well under the server's MUSTER_AGENT_MAX_PAYLOAD (4 MiB by default).
   */
  terminalTransferChunkBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(64 * 1024),
  terminalTransferWindowBytes: z.coerce
    .number()
    .int()
    .min(1024)
    .default(1024 * 1024),
});
export type AgentConfig = Readonly<z.infer<typeof Schema> & { configPath: string | null }>;

const ENV_KEYS: Record<string, keyof z.infer<typeof Schema>> = {
  MUSTER_AGENT_SERVER: 'server',
  MUSTER_AGENT_TOKEN: 'token',
  MUSTER_AGENT_STATE_DIR: 'stateDir',
  MUSTER_AGENT_NAME: 'name',
  MUSTER_AGENT_CA_FILE: 'caFile',
  MUSTER_AGENT_HEALTH_PORT: 'healthPort',
  MUSTER_AGENT_SHELL: 'shell',
  MUSTER_AGENT_UPDATE_PUBLIC_KEY: 'updatePublicKey',
  MUSTER_AGENT_INSTALL_ROOT: 'installRoot',
  MUSTER_AGENT_LOG_LEVEL: 'logLevel',
  MUSTER_AGENT_UNREACHABLE_AFTER_SEC: 'unreachableAfterSec',
  MUSTER_AGENT_BACKOFF_INITIAL_MS: 'backoffInitialMs',
  MUSTER_AGENT_BACKOFF_MAX_MS: 'backoffMaxMs',
  MUSTER_AGENT_RESTART_BACKOFF_MAX_MS: 'restartBackoffMaxMs',
  MUSTER_AGENT_RESTART_WINDOW_MS: 'restartWindowMs',
  MUSTER_AGENT_UPDATE_CONFIRM_SEC: 'updateConfirmSec',
  MUSTER_AGENT_TEST_UPDATE_CRASH_AT: 'updateCrashAt',
  MUSTER_AGENT_UPDATE_DRAIN_SEC: 'updateDrainSec',
  MUSTER_AGENT_TERMINAL_USER: 'terminalUser',
  MUSTER_AGENT_TERMINAL_HOME: 'terminalHome',
  MUSTER_AGENT_TERMINAL_MAX_SESSIONS: 'terminalMaxSessions',
  MUSTER_AGENT_TERMINAL_IDLE_TIMEOUT_SEC: 'terminalIdleTimeoutSec',
  MUSTER_AGENT_TERMINAL_HIGH_WATERMARK: 'terminalHighWatermark',
  MUSTER_AGENT_TERMINAL_LOW_WATERMARK: 'terminalLowWatermark',
  MUSTER_AGENT_BULK_WRITE_THRESHOLD: 'bulkWriteThreshold',
  MUSTER_AGENT_BULK_WINDOW: 'bulkWindow',
  MUSTER_AGENT_POLICY: 'policy',
  MUSTER_AGENT_EXEC_KILL_GRACE_SEC: 'execKillGraceSec',
  MUSTER_AGENT_EXEC_BUFFER_BYTES: 'execBufferBytes',
  MUSTER_AGENT_FILE_CHECK_SEC: 'fileCheckSec',
  MUSTER_AGENT_FILE_ROOT: 'fileRoot',
  MUSTER_AGENT_EXEC_STOP_DRAIN_SEC: 'execStopDrainSec',
  MUSTER_AGENT_EXEC_STOP_REPORT_SEC: 'execStopReportSec',
  MUSTER_AGENT_EXEC_HIGH_WATER_BYTES: 'execHighWaterBytes',
  MUSTER_AGENT_EXEC_LOW_WATER_BYTES: 'execLowWaterBytes',
  MUSTER_AGENT_MAX_PAYLOAD: 'maxPayload',
  MUSTER_AGENT_EXEC_JOURNAL_KEEP: 'execJournalKeep',
  MUSTER_AGENT_EXEC_OUTPUT_CHUNK_BYTES: 'execOutputChunkBytes',
  MUSTER_AGENT_TERMINAL_TRANSFER_CHUNK_BYTES: 'terminalTransferChunkBytes',
  MUSTER_AGENT_TERMINAL_TRANSFER_WINDOW_BYTES: 'terminalTransferWindowBytes',
};

export class AgentConfigError extends Error {}

function parseLabels(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new AgentConfigError(`--label wants k=v, got ${JSON.stringify(kv)}`);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

const OPTIONS = {
  server: { type: 'string' },
  token: { type: 'string' },
  'state-dir': { type: 'string' },
  name: { type: 'string' },
  label: { type: 'string', multiple: true },
  'ca-file': { type: 'string' },
  config: { type: 'string' },
  'health-port': { type: 'string' },
  shell: { type: 'string' },
  'install-root': { type: 'string' },
  version: { type: 'boolean' },
  'log-level': { type: 'string' },
  policy: { type: 'string' },
  'terminal-user': { type: 'string' },
  'terminal-home': { type: 'string' },
  'terminal-max-sessions': { type: 'string' },
  'terminal-idle-timeout-sec': { type: 'string' },
} as const;

/**
 * util.parseArgs refuses `--opt -1` as ambiguous (the value starts with a dash); `--opt=-1` works.
 * Both spellings must parse, so a negative number after a value-taking option is joined to it.
 */
function joinNegativeValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : null;
    const next = argv[i + 1];
    if (name && (OPTIONS as Record<string, { type: string }>)[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** Parses flags, environment and config file. `--version` is handled by the caller before this. */
export function loadAgentConfig(argv: string[], env: NodeJS.ProcessEnv): AgentConfig {
  let flags;
  try {
    flags = parseArgs({
      args: joinNegativeValues(argv),
      options: OPTIONS,
      strict: true,
    }).values;
  } catch (err) {
    throw new AgentConfigError((err as Error).message);
  }
  const configPath = flags.config ?? env['MUSTER_AGENT_CONFIG'] ?? null;
  let file: Record<string, unknown> = {};
  if (configPath) {
    try {
      file = JSON.parse(fs.readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new AgentConfigError(`cannot read config file ${configPath}: ${(err as Error).message}`);
    }
  }
  // A setting the agent does not know (a typo, a setting of another version) is refused, not
  // accepted and ignored: the file must say what the agent runs with.
  if (typeof file !== 'object' || file === null || Array.isArray(file)) throw new AgentConfigError(`config file ${configPath}: not a JSON object`);
  const unknown = Object.keys(file).filter((k) => !Object.hasOwn(Schema.shape, k));
  if (unknown.length) {
    throw new AgentConfigError(
      `config file ${configPath}: unknown setting${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}`,
    );
  }
  const merged: Record<string, unknown> = { ...file };
  // Where each setting's value came from, so a bad one is refused naming what to fix.
  const from: Record<string, string> = Object.fromEntries(Object.keys(file).map((k) => [k, `config file ${configPath}`]));
  for (const [k, key] of Object.entries(ENV_KEYS)) if (env[k]) [merged[key], from[key]] = [env[k], k];
  if (env['MUSTER_AGENT_LABELS']) merged['labels'] = { ...(merged['labels'] as object), ...parseLabels(env['MUSTER_AGENT_LABELS'].split(',')) };
  const f: Record<string, unknown> = {
    server: flags.server,
    token: flags.token,
    stateDir: flags['state-dir'],
    name: flags.name,
    caFile: flags['ca-file'],
    healthPort: flags['health-port'],
    shell: flags.shell,
    installRoot: flags['install-root'],
    logLevel: flags['log-level'],
    terminalUser: flags['terminal-user'],
    terminalHome: flags['terminal-home'],
    terminalMaxSessions: flags['terminal-max-sessions'],
    terminalIdleTimeoutSec: flags['terminal-idle-timeout-sec'],
    policy: flags.policy,
  };
  for (const [k, v] of Object.entries(f)) if (v !== undefined) [merged[k], from[k]] = [v, `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`];
  if (flags.label?.length) merged['labels'] = { ...(merged['labels'] as object), ...parseLabels(flags.label) };
  const parsed = Schema.safeParse(merged);
  if (!parsed.success) {
    const source = (key: unknown) => (typeof key === 'string' && from[key] && key !== 'labels' ? ` (from ${from[key]})` : '');
    throw new AgentConfigError(parsed.error.issues.map((i) => `${i.path.join('.') || 'config'}: ${i.message}${source(i.path[0])}`).join('\n'));
  }
  if (parsed.data.terminalLowWatermark >= parsed.data.terminalHighWatermark) {
    throw new AgentConfigError('terminalLowWatermark must be below terminalHighWatermark');
  }
  if (parsed.data.execLowWaterBytes >= parsed.data.execHighWaterBytes) {
    throw new AgentConfigError('execLowWaterBytes must be below execHighWaterBytes');
  }
  if (parsed.data.terminalTransferWindowBytes < parsed.data.terminalTransferChunkBytes) {
    throw new AgentConfigError('terminalTransferWindowBytes must be at least terminalTransferChunkBytes');
  }
  return Object.freeze({ ...parsed.data, configPath });
}
