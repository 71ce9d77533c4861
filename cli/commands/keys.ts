import { createHash, createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { packageSigningMessage, scriptSigningMessage } from '../../protocol/index.js';
import { CliError, type Command } from '../command.js';

/** `muster keygen --out DIR`: an ed25519 key pair for signing agent packages. */
export const keygen: Command = {
  name: 'keygen',
  summary: 'make an ed25519 key pair for signing agent packages',
  usage: 'muster keygen --out DIR [--force]',
  options: { out: { type: 'string' }, force: { type: 'boolean' } },
  run: async ({ values, out }) => {
    const dir = values['out'];
    if (typeof dir !== 'string' || !dir) throw new CliError('--out DIR is required');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const priv = path.join(dir, 'muster-update.key');
    const pub = path.join(dir, 'muster-update.pub');
    if (!values['force'] && (fs.existsSync(priv) || fs.existsSync(pub))) throw new CliError(`${priv} or ${pub} exists; use --force to replace`);
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    fs.writeFileSync(priv, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    fs.writeFileSync(pub, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
    out(`private key: ${priv}  (keep it off the server; it signs agent packages)\n`);
    const raw = publicKey.export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
    out(`public key:  ${pub}  (install-agent.sh --public-key ${pub})\n`);
    out(`public key, base64: ${raw}  (MUSTER_UPDATE_PUBLIC_KEY on the server; install-agent.sh --public-key-b64)\n`);
  },
};

/** Reads an ed25519 private key (PEM) for signing. */
function readSigningKey(keyFile: string): KeyObject {
  let key;
  try {
    key = createPrivateKey(fs.readFileSync(keyFile, 'utf8'));
  } catch (err) {
    throw new CliError(`cannot read private key ${keyFile}: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new CliError(`${keyFile} is not an ed25519 key`);
  return key;
}

/** What a script is run with; all of it is covered by the signature (protocol/policy.ts scriptSigningMessage). */
export interface ScriptSpec {
  script: string;
  interpreter: string;
  args: string[];
  env: Record<string, string>;
  cwd: string | null;
}

/** The base64 ed25519 signature of a script run, for hosts whose policy requires signed scripts. */
export function signScript(keyFile: string, s: ScriptSpec): string {
  const msg = scriptSigningMessage({ ...s, scriptSha256: createHash('sha256').update(s.script).digest('hex') });
  return sign(null, Buffer.from(msg), readSigningKey(keyFile)).toString('base64');
}

function parseEnv(list: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new CliError(`--env wants NAME=VALUE, got ${JSON.stringify(kv)}`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

/**
 * `muster sign --key KEY FILE`: prints the base64 ed25519 signature of an agent package;
 * with `--script`, of a script run (the script, its interpreter, arguments, environment and
 * directory: run it with exactly these, e.g. `muster run --signature SIG`).
 */
export const signCmd: Command = {
  name: 'sign',
  summary: 'sign an agent package or (--script) a script (prints the base64 signature)',
  usage: 'muster sign --key PRIVATE_KEY FILE | muster sign --key PRIVATE_KEY --script [--interpreter bash] [--arg X]... [--env K=V]... [--cwd DIR] SCRIPT_FILE',
  options: {
    key: { type: 'string' },
    script: { type: 'boolean' },
    interpreter: { type: 'string' },
    arg: { type: 'string', multiple: true },
    env: { type: 'string', multiple: true },
    cwd: { type: 'string' },
  },
  run: async ({ values, positionals, out }) => {
    const keyFile = values['key'];
    const file = positionals[0];
    if (typeof keyFile !== 'string' || !file) throw new CliError(`usage: ${signCmd.usage}`);
    if (values['script']) {
      let script: string;
      try {
        script = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
      } catch (err) {
        throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
      }
      const interpreter = typeof values['interpreter'] === 'string' ? values['interpreter'] : 'bash';
      const sig = signScript(keyFile, {
        script,
        interpreter,
        args: (values['arg'] as string[] | undefined) ?? [],
        env: parseEnv((values['env'] as string[] | undefined) ?? []),
        cwd: typeof values['cwd'] === 'string' ? values['cwd'] : null,
      });
      out(`${sig}\n`);
      return;
    }
    const key = readSigningKey(keyFile);
    const hash = createHash('sha256');
    await new Promise<void>((resolve, reject) => {
      fs.createReadStream(file)
        .on('data', (c) => hash.update(c))
        .on('end', resolve)
        .on('error', (err) => reject(new CliError(`cannot read ${file}: ${err.message}`)));
    });
    const sig = sign(null, Buffer.from(packageSigningMessage(hash.digest('hex'))), key);
    out(`${sig.toString('base64')}\n`);
  },
};
