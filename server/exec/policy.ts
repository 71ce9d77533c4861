import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { execDenial, scriptSigningMessage, type HostPolicy } from '../../protocol/index.js';
import type { Task } from './model.js';

/** DER prefix of an ed25519 SubjectPublicKeyInfo; followed by the 32 raw key bytes. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const keyCache = new Map<string, KeyObject | null>();

function rawKey(b64: string): KeyObject | null {
  let k = keyCache.get(b64);
  if (k === undefined) {
    try {
      const raw = Buffer.from(b64, 'base64');
      k = raw.length === 32 ? createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' }) : null;
    } catch {
      k = null;
    }
    if (keyCache.size > 10_000) keyCache.clear();
    keyCache.set(b64, k);
  }
  return k;
}

/**
 * Why the agent's reported policy forbids this task (null when allowed, or when the agent never
 * reported a policy). This is only the early refusal, so the operator sees `policy_denied` at once
 * instead of a round trip: the agent checks again, itself, whatever the server decides.
 */
export function taskDenial(
  policy: HostPolicy | null,
  task: Pick<Task, 'script' | 'scriptSha256' | 'interpreter' | 'args' | 'env' | 'cwd' | 'signature'>,
): string | null {
  const basic = execDenial(policy, task.interpreter, task.signature != null);
  if (basic || !policy?.requireSignedScripts) return basic;
  const sig = Buffer.from(task.signature ?? '', 'base64');
  const msg = Buffer.from(scriptSigningMessage({ ...task, scriptSha256: task.scriptSha256 }));
  const ok =
    sig.length === 64 &&
    policy.scriptPublicKeys.some((b64) => {
      const k = rawKey(b64);
      try {
        return k != null && verify(null, msg, k, sig);
      } catch {
        return false;
      }
    });
  return ok
    ? null
    : "script signature does not verify with the host's scriptPublicKeys (script, interpreter, arguments, environment or directory changed since signing, or signed by another key)";
}
