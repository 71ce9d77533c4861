import pino from 'pino';

export type Logger = pino.Logger;

/** Field names whose values are credentials: redacted wherever they appear (top level and nested). */
export const SECRET_KEYS = [
  'authorization',
  'cookie',
  'set-cookie',
  'password',
  'secret',
  'token',
  'passwordHash',
  'password_hash',
  'secretHash',
  'secret_hash',
  'tokenHash',
  'token_hash',
  'enrollToken',
  'x-muster-enroll-token',
] as const;

/** pino redact paths for SECRET_KEYS at depth 0 to 3 (pino has no recursive wildcard). */
function redactPaths(): string[] {
  const out: string[] = [];
  for (const k of SECRET_KEYS) {
    const key = /^[A-Za-z_$][\w$]*$/.test(k) ? k : `["${k}"]`;
    const dot = key.startsWith('[') ? '' : '.';
    out.push(key, `*${dot}${key}`, `*.*${dot}${key}`, `*.*.*${dot}${key}`);
  }
  return out;
}

/** Driver fields that carry bound values (knex, mysql2, better-sqlite3). */
const DB_VALUE_FIELDS = ['sql', 'sqlMessage', 'parameters', 'bindings', 'values'];

/**
 * Error serializer that never writes bound values. knex prefixes a failed query's message with the
 * query and its values interpolated (`insert into users ... values ('admin', 'scrypt$…') - …`) and
 * mysql2 adds `sql`, `sqlMessage` ("Duplicate entry 'value' …"): for database errors only the
 * driver's code and a message with every quoted literal replaced by `?` are kept.
 */
export function safeErrorSerializer(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const e = err as Error & Record<string, unknown>;
  const isDb = DB_VALUE_FIELDS.some((f) => f in e) || /^(ER_|SQLITE_)/.test(String(e['code'] ?? ''));
  if (!isDb) return pino.stdSerializers.err(err);
  const raw = typeof e['sqlMessage'] === 'string' ? e['sqlMessage'] : (e.message.split(' - ').pop() ?? '');
  const message = raw.replace(/'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"/g, '?').slice(0, 300);
  const frames = (e.stack ?? '')
    .split('\n')
    .filter((l) => /^\s+at /.test(l))
    .join('\n');
  return {
    type: e.name,
    message,
    code: e['code'],
    errno: e['errno'],
    sqlState: e['sqlState'],
    stack: `${e.name}: ${message}\n${frames}`,
  };
}

/** The server's structured JSON logger. Terminal contents and secrets are never logged. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const opts: pino.LoggerOptions = {
    level,
    base: { svc: 'muster-server' },
    // One line format for server and agent (agent/log.ts): level by name, ISO-8601 time.
    formatters: { level: (label) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: redactPaths(), censor: '[redacted]' },
    serializers: { err: safeErrorSerializer, error: safeErrorSerializer },
  };
  return destination ? pino(opts, destination) : pino(opts);
}
