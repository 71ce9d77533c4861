import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { packageSigningMessage } from '../../protocol/index.js';

/** DER prefix of an ed25519 SubjectPublicKeyInfo; followed by the 32 raw key bytes. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** Parses the configured update key: a PEM public key, or the base64 of the 32 raw key bytes. */
export function parsePublicKey(text: string): KeyObject {
  const t = text.trim();
  let key: KeyObject;
  if (t.includes('-----BEGIN')) {
    key = createPublicKey(t);
  } else {
    const raw = Buffer.from(t, 'base64');
    if (raw.length !== 32) throw new Error('updatePublicKey: expected a PEM key or 32 base64-encoded bytes');
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`updatePublicKey: expected an ed25519 key, got ${key.asymmetricKeyType ?? 'unknown'}`);
  return key;
}

/** True when `signatureB64` is a valid ed25519 signature of the package with this sha256. */
export function verifyPackageSignature(key: KeyObject, sha256Hex: string, signatureB64: string): boolean {
  const sig = Buffer.from(signatureB64, 'base64');
  if (sig.length !== 64) return false;
  try {
    return verify(null, Buffer.from(packageSigningMessage(sha256Hex)), key, sig);
  } catch {
    return false;
  }
}
