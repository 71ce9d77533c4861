import { createHash, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { scriptSigningMessage, type HostPolicy } from '../protocol/index.js';
import { parsePublicKey } from './updater/verify.js';

/** Default location of the host policy file (the agent config, `--policy` or MUSTER_AGENT_POLICY move it; the server never can). */
export const DEFAULT_POLICY_PATH = '/etc/muster-agent/policy.json';

/** Largest policy file read (a policy is a few hundred bytes; anything bigger is a mistake). */
const MAX_POLICY_BYTES = 256 * 1024;

const INTERPRETERS = ['bash', 'sh', 'python3', 'node', 'shebang'] as const;

/** The file's schema. Unknown keys are an error: a misspelt `termnials: false` must not silently allow terminals. */
const PolicyFile = z
  .object({
    terminals: z.boolean().default(true),
    exec: z.boolean().default(true),
    interpreters: z.array(z.enum(INTERPRETERS)).max(64).nullable().default(null),
    runAs: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z_][A-Za-z0-9_.-]*\$?$/, 'runAs must be a user name')
      .nullable()
      .default(null),
    requireSignedScripts: z.boolean().default(false),
    scriptPublicKeys: z.array(z.string().min(1).max(4096)).max(64).default([]),
    allowedPaths: z.array(z.string().min(1).max(4096).regex(/^\//, 'allowedPaths entries must be absolute')).max(256).nullable().default(null),
    /** false: the server cannot change any setting live (every key of a `config` push is refused). */
    remoteConfig: z.boolean().default(true),
    /** Caps the terminal idle timeout, whoever sets it (config file or server). */
    terminalIdleTimeoutMaxSec: z.number().int().positive().nullable().default(null),
    /** Caps an execution's output buffer, whoever sets it. */
    execBufferMaxBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .nullable()
      .default(null),
  })
  .strict()
  .refine((p) => !p.requireSignedScripts || p.scriptPublicKeys.length > 0, {
    message: 'requireSignedScripts needs at least one key in scriptPublicKeys',
    path: ['scriptPublicKeys'],
  });

/** The policy the agent enforces: what it reports, plus the parsed signing keys. */
export interface Policy {
  readonly view: HostPolicy;
  readonly keys: readonly KeyObject[];
}

/** No file: everything allowed, scripts and terminals run as the agent's own user (the behaviour before policies existed). */
export function defaultPolicy(file: string): Policy {
  return {
    view: {
      source: 'default',
      path: file,
      terminals: true,
      exec: true,
      interpreters: null,
      runAs: null,
      requireSignedScripts: false,
      scriptPublicKeys: [],
      allowedPaths: null,
      remoteConfig: true,
      terminalIdleTimeoutMaxSec: null,
      execBufferMaxBytes: null,
    },
    keys: [],
  };
}

/**
 * An unsafe or unreadable policy file: its contents are ignored (never trusted), and the agent
 * refuses scripts and terminals until the file is fixed and the agent re-reads it (SIGHUP). Failing
 * closed is the point: the host's owner asked for restrictions, and a file anyone could have
 * written (or that does not parse) cannot tell us which.
 */
function lockdown(file: string, error: string): Policy {
  return {
    view: {
      source: 'lockdown',
      path: file,
      error: error.slice(0, 1024),
      terminals: false,
      exec: false,
      interpreters: [],
      runAs: null,
      requireSignedScripts: true,
      scriptPublicKeys: [],
      allowedPaths: [],
      remoteConfig: false,
      terminalIdleTimeoutMaxSec: null,
      execBufferMaxBytes: null,
    },
    keys: [],
  };
}

/** Owner and mode rule shared by the file and its directory: root (or the agent's own user) and not group/world-writable. */
function unsafe(st: fs.Stats, what: string, myUid: number): string | null {
  if (st.uid !== 0 && st.uid !== myUid)
    return `${what} is owned by uid ${st.uid}; it must be owned by root${myUid !== 0 ? ` or the agent's user (uid ${myUid})` : ''}`;
  if (st.mode & 0o022) return `${what} is group- or world-writable (mode ${(st.mode & 0o777).toString(8)}); chmod go-w it`;
  return null;
}

/**
 * Reads and validates the host policy. Never throws: a missing file gives the default policy, an
 * unsafe or invalid one the lockdown policy (with `view.error` saying why, for a loud log line
 * and for the console).
 */
export function loadPolicy(file: string, myUid = process.getuid?.() ?? 0): Policy {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return defaultPolicy(file);
    return lockdown(file, `cannot open ${file}: ${(err as Error).message}`);
  }
  let text: string;
  try {
    // fstat the descriptor we read from, so the checked file is the read file.
    const st = fs.fstatSync(fd);
    if (!st.isFile()) return lockdown(file, `${file} is not a regular file`);
    const bad = unsafe(st, file, myUid) ?? unsafe(fs.statSync(path.dirname(fs.realpathSync(file))), `the directory of ${file}`, myUid);
    if (bad) return lockdown(file, bad);
    if (st.size > MAX_POLICY_BYTES) return lockdown(file, `${file} is larger than ${MAX_POLICY_BYTES} bytes`);
    text = fs.readFileSync(fd, 'utf8');
  } catch (err) {
    return lockdown(file, `cannot read ${file}: ${(err as Error).message}`);
  } finally {
    fs.closeSync(fd);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return lockdown(file, `${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = PolicyFile.safeParse(raw);
  if (!parsed.success) {
    return lockdown(file, `${file}: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'policy'}: ${i.message}`).join('; ')}`);
  }
  const p = parsed.data;
  const keys: KeyObject[] = [];
  const raws: string[] = [];
  for (const [i, k] of p.scriptPublicKeys.entries()) {
    try {
      const key = parsePublicKey(k);
      keys.push(key);
      raws.push(key.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64'));
    } catch (err) {
      return lockdown(file, `${file}: scriptPublicKeys.${i}: ${(err as Error).message.replace(/^updatePublicKey: /, '')}`);
    }
  }
  return {
    view: {
      source: 'file',
      path: file,
      terminals: p.terminals,
      exec: p.exec,
      interpreters: p.interpreters,
      runAs: p.runAs,
      requireSignedScripts: p.requireSignedScripts,
      scriptPublicKeys: raws,
      allowedPaths: p.allowedPaths,
      remoteConfig: p.remoteConfig,
      terminalIdleTimeoutMaxSec: p.terminalIdleTimeoutMaxSec,
      execBufferMaxBytes: p.execBufferMaxBytes,
    },
    keys,
  };
}

/** True when `signatureB64` signs this exact script, interpreter, arguments, environment and directory with one of `keys`. */
export function verifyScriptSignature(
  keys: readonly KeyObject[],
  run: { script: string; interpreter: string; args: readonly string[]; env: Readonly<Record<string, string>>; cwd: string | null },
  signatureB64: string,
): boolean {
  const sig = Buffer.from(signatureB64, 'base64');
  if (sig.length !== 64) return false;
  const msg = Buffer.from(scriptSigningMessage({ ...run, scriptSha256: createHash('sha256').update(run.script).digest('hex') }));
  return keys.some((k) => {
    try {
      return verify(null, msg, k, sig);
    } catch {
      return false;
    }
  });
}
