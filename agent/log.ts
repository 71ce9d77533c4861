import pino from 'pino';

/**
 * The agent's structured JSON logger: pino on stdout (→ journald), the same line format as the
 * server's (`server/log.ts`): level as its name, ISO-8601 time, `svc`, errors under `err` with their
 * stack. Never logs secrets or terminal bytes. Its level can be changed at run time (`log.level =`).
 */
export type AgentLog = pino.Logger;

export type AgentLogLevel = 'error' | 'warn' | 'info' | 'debug';

/** Field names whose values are credentials (any depth, any case): written as `[redacted]`. */
const SECRET_KEY = /^(authorization|cookie|set-cookie|password|secret|token|x-muster-enroll-token|enroll_?token|.*(secret|password|token)(_?hash)?)$/i;

/** Deep copy with credential fields redacted; Error objects are left to the `err` serializer. */
function redact(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object' || value instanceof Error || depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) && v !== undefined && v !== null && typeof v !== 'number' && typeof v !== 'boolean' ? '[redacted]' : redact(v, depth + 1);
  }
  return out;
}

/**
 * The line format both processes share: `{"level":"warn","time":"2026-…Z","svc":…,…,"msg":…}`.
 * Kept identical to the server's options (a unit test compares the two).
 */
export const LOG_FORMAT = {
  formatters: { level: (label: string) => ({ level: label }) },
  timestamp: pino.stdTimeFunctions.isoTime,
} as const;

/** The agent's logger; `bindings` (the agent id) are on every line. Synchronous writes: lines before process.exit are kept. */
export function createAgentLog(level: AgentLogLevel, bindings: Record<string, unknown> = {}, destination?: pino.DestinationStream): AgentLog {
  const opts: pino.LoggerOptions = {
    level,
    base: { svc: 'muster-agent', ...bindings },
    ...LOG_FORMAT,
    formatters: { ...LOG_FORMAT.formatters, log: (o) => redact(o, 0) as Record<string, unknown> },
    serializers: { err: pino.stdSerializers.err, error: pino.stdSerializers.err },
  };
  return destination ? pino(opts, destination) : pino(opts, pino.destination({ fd: 1, sync: true }));
}
