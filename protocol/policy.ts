import { z } from 'zod';

/**
 * Host-side policy as an agent reports it (hello `policy`, and the `policy` message after SIGHUP).
 * The agent reads it from a root-owned file the server cannot write and enforces it itself; the
 * server only uses this copy to refuse early (before dispatching) and to show it.
 */
export const HostPolicy = z.object({
  /**
   * Where it came from: `default` (no file: everything allowed), `file` (read from `path`), or
   * `lockdown` (the file exists but is unsafe or invalid: ignored, and nothing is allowed until
   * it is fixed; `error` says why).
   */
  source: z.enum(['default', 'file', 'lockdown']),
  path: z.string().max(4096),
  error: z.string().max(1024).optional(),
  terminals: z.boolean(),
  exec: z.boolean(),
  /** Interpreters `exec.run` may use (`bash`, `sh`, `python3`, `node`, `shebang`); null = any. */
  interpreters: z.array(z.string().max(255)).max(64).nullable(),
  /** User scripts and terminals run as; null = the agent's own user. */
  runAs: z.string().max(64).nullable(),
  requireSignedScripts: z.boolean(),
  /** Public keys (base64 of the 32 raw ed25519 bytes) that may sign scripts. */
  scriptPublicKeys: z.array(z.string().max(64)).max(64),
  /** Path prefixes file writes may touch (file distribution), and terminal uploads and downloads; null = any. */
  allowedPaths: z.array(z.string().max(4096)).max(256).nullable(),
  /** Whether the server may change settings live (`config`); false: every pushed key is refused. Absent: true. */
  remoteConfig: z.boolean().optional(),
  /** Caps on live and local settings (null or absent: none): the idle timeout of terminals, an execution's output buffer. */
  terminalIdleTimeoutMaxSec: z.number().int().positive().nullable().optional(),
  execBufferMaxBytes: z.number().int().positive().nullable().optional(),
});
export type HostPolicy = z.infer<typeof HostPolicy>;

/** Why `policy` forbids running a script with this interpreter (null when allowed). Signatures are checked separately. */
export function execDenial(policy: HostPolicy | null | undefined, interpreter: string, signed: boolean): string | null {
  if (!policy) return null;
  if (policy.source === 'lockdown') return `host policy is locked down: ${policy.error ?? 'policy file rejected'}`;
  if (!policy.exec) return 'script execution is disabled by host policy';
  if (policy.interpreters && !policy.interpreters.includes(interpreter)) {
    return `interpreter ${JSON.stringify(interpreter)} is not allowed by host policy (allowed: ${policy.interpreters.join(', ') || 'none'})`;
  }
  if (policy.requireSignedScripts && !signed) return 'host policy requires signed scripts and this script is not signed';
  return null;
}

/** Why `policy` forbids opening a terminal (null when allowed). */
export function terminalDenial(policy: HostPolicy | null | undefined): string | null {
  if (!policy) return null;
  if (policy.source === 'lockdown') return `host policy is locked down: ${policy.error ?? 'policy file rejected'}`;
  if (!policy.terminals) return 'terminals are disabled by host policy';
  return null;
}

/**
 * Whether `absPath` may be written under `allowedPaths` (for file distribution). Paths are compared
 * after normalising `.`/`..` segments, prefix by whole path segment (`/etc/app` allows
 * `/etc/app/x` but not `/etc/application`). Relative paths are never allowed.
 */
export function pathAllowed(allowedPaths: readonly string[] | null, absPath: string): boolean {
  if (!absPath.startsWith('/')) return false;
  const norm = normalise(absPath);
  if (norm == null) return false;
  if (allowedPaths == null) return true;
  return allowedPaths.some((p) => {
    const base = normalise(p);
    if (base == null) return false;
    return base === '/' || norm === base || norm.startsWith(`${base}/`);
  });
}

function normalise(p: string): string | null {
  if (!p.startsWith('/') || p.includes('\0')) return null;
  const out: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return `/${out.join('/')}`;
}

/**
 * What a script's ed25519 signature covers: the interpreter, the arguments, the environment, the
 * working directory and the script's sha256 (hex), in one canonical JSON array. Binding all of
 * them means a signature cannot be replayed with another interpreter or arguments, nor with an
 * environment that changes what the interpreter runs (`BASH_ENV`, `NODE_OPTIONS`, `PATH`).
 */
export function scriptSigningMessage(s: {
  interpreter: string;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd: string | null;
  scriptSha256: string;
}): string {
  const env = Object.keys(s.env)
    .sort()
    .map((k) => [k, s.env[k]!]);
  return `muster-script:v1:${JSON.stringify([s.interpreter, [...s.args], env, s.cwd, s.scriptSha256.toLowerCase()])}`;
}
