import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { packageSigningMessage } from '../../protocol/index.js';
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

/** `muster sign --key KEY FILE`: prints the base64 ed25519 signature of an agent package. */
export const signCmd: Command = {
  name: 'sign',
  summary: 'sign an agent package (prints the base64 signature)',
  usage: 'muster sign --key PRIVATE_KEY FILE',
  options: { key: { type: 'string' } },
  run: async ({ values, positionals, out }) => {
    const keyFile = values['key'];
    const file = positionals[0];
    if (typeof keyFile !== 'string' || !file) throw new CliError('usage: muster sign --key PRIVATE_KEY FILE');
    let key;
    try {
      key = createPrivateKey(fs.readFileSync(keyFile, 'utf8'));
    } catch (err) {
      throw new CliError(`cannot read private key ${keyFile}: ${(err as Error).message}`);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new CliError(`${keyFile} is not an ed25519 key`);
    const hash = createHash('sha256');
    await new Promise<void>((resolve, reject) => {
      fs.createReadStream(file).on('data', (c) => hash.update(c)).on('end', resolve).on('error', (err) => reject(new CliError(`cannot read ${file}: ${err.message}`)));
    });
    const sig = sign(null, Buffer.from(packageSigningMessage(hash.digest('hex'))), key);
    out(`${sig.toString('base64')}\n`);
  },
};
