import os from 'node:os';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../../protocol/index.js';
import { AuditLog } from '../auth/audit.js';
import { AuthService, canonicalUsername } from '../auth/auth-service.js';
import { loadConfig, randomSecret } from '../config/config.js';
import { openDb } from '../db/db.js';

/** Same bounds as a password set through the API (protocol/dashboard.ts). */
const MIN_PASSWORD = PASSWORD_MIN_LENGTH;
const MAX_PASSWORD = PASSWORD_MAX_LENGTH;

export const RESET_PASSWORD_USAGE = `usage: node dist/server.js reset-password <user> [--password-stdin]
  Sets a new password for <user> in the database named by MUSTER_DB_URL (default: SQLite in
  MUSTER_DATA_DIR), ends all of that user's sessions and writes an audit entry. Without
  --password-stdin a password is generated and printed once; with it, the first line of stdin is
  the new password (at least ${MIN_PASSWORD} characters).`;

export class ResetPasswordError extends Error {}

async function readStdinLine(stdin: NodeJS.ReadableStream): Promise<string> {
  let buf = '';
  for await (const chunk of stdin) {
    buf += chunk.toString();
    if (buf.includes('\n') || buf.length > MAX_PASSWORD + 2) break;
  }
  return buf.split(/\r?\n/)[0] ?? '';
}

/**
 * The way back in when the admin password is lost: works offline on the database itself (the
 * server may be running or not), with the same configuration the server reads. Not reachable over
 * the network: whoever can run it can already read the database.
 */
export async function resetPassword(args: string[], env: NodeJS.ProcessEnv, io: { stdin: NodeJS.ReadableStream; out: (s: string) => void }): Promise<void> {
  const positional = args.filter((a) => !a.startsWith('--'));
  const unknown = args.filter((a) => a.startsWith('--') && a !== '--password-stdin');
  if (positional.length !== 1 || unknown.length) throw new ResetPasswordError(RESET_PASSWORD_USAGE);
  const fromStdin = args.includes('--password-stdin');
  const config = loadConfig(env);
  let password: string;
  if (fromStdin) {
    password = await readStdinLine(io.stdin);
    if (password.length < MIN_PASSWORD || password.length > MAX_PASSWORD) {
      throw new ResetPasswordError(`the password must be ${MIN_PASSWORD} to ${MAX_PASSWORD} characters (got ${password.length})`);
    }
  } else {
    password = randomSecret(12);
  }
  const { db, describe } = openDb(config.dbUrl, config.dataDir, { connectTimeoutMs: config.dbConnectTimeoutMs, acquireTimeoutMs: config.dbAcquireTimeoutMs });
  try {
    const username = canonicalUsername(positional[0]!);
    const user = (await db('users')
      .whereRaw('lower(username) = ?', [username])
      .first('id', 'username', 'role', 'disabled')
      .catch((err: unknown) => {
        // A wrong MUSTER_DATA_DIR or MUSTER_DB_URL: say which database was looked at.
        throw new ResetPasswordError(`cannot read users from ${describe}: ${(err as Error).message} (is MUSTER_DB_URL / MUSTER_DATA_DIR the server's?)`);
      })) as { id: number | string; username: string; role: string; disabled: unknown } | undefined;
    if (!user) {
      const names = (await db('users').orderBy('id').limit(20).pluck('username')) as string[];
      throw new ResetPasswordError(`no user "${username}" in ${describe}${names.length ? ` (users: ${names.join(', ')})` : ''}`);
    }
    const [{ n }] = (await db('sessions').where({ user_id: user.id }).count({ n: '*' })) as [{ n: number | string }];
    // updateUser hashes the password and deletes the user's sessions, as a reset through the API does.
    await new AuthService(db, config.sessionTtlSec).updateUser(Number(user.id), { password });
    await new AuditLog(db).record({
      actor: { username: `system (reset-password by ${os.userInfo().username})`, role: null, ip: null },
      action: 'user.password_reset',
      targetType: 'user',
      targetId: String(user.id),
      details: { username: user.username, via: 'command line', generated: !fromStdin, sessionsEnded: Number(n) },
    });
    io.out(`Password of "${user.username}" (${String(user.role)}) reset in ${describe}; ${Number(n)} session(s) ended.\n`);
    if (!fromStdin) io.out(`New password: ${password}\n(shown once; change it after signing in)\n`);
    if (user.disabled) io.out(`Note: "${user.username}" is disabled; an admin can enable it under Users.\n`);
  } finally {
    await db.destroy();
  }
}
