/** Minimal structured JSON logger for the agent (stdout → journald). Never logs secrets or terminal bytes. */
export interface AgentLog {
  error(o: object, msg: string): void;
  warn(o: object, msg: string): void;
  info(o: object, msg: string): void;
  debug(o: object, msg: string): void;
}

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3 } as const;

/** Field names whose values are credentials (any depth, any case): written as `[redacted]`. */
const SECRET_KEY = /^(authorization|cookie|set-cookie|password|secret|token|x-muster-enroll-token|enroll_?token|.*(secret|password|token)(_?hash)?)$/i;

/** JSON.stringify replacer: redacts credential fields and keeps errors readable. */
function redact(key: string, value: unknown): unknown {
  if (key !== '' && SECRET_KEY.test(key) && value !== undefined && value !== null && typeof value !== 'number' && typeof value !== 'boolean') return '[redacted]';
  if (value instanceof Error) return { type: value.name, message: value.message, stack: value.stack };
  return value;
}

export function createAgentLog(level: keyof typeof LEVELS, base: Record<string, unknown> = {}): AgentLog {
  const max = LEVELS[level];
  const emit = (lvl: keyof typeof LEVELS) => (o: object, msg: string) => {
    if (LEVELS[lvl] > max) return;
    process.stdout.write(`${JSON.stringify({ level: lvl, time: new Date().toISOString(), svc: 'muster-agent', ...base, ...o, msg }, redact)}\n`);
  };
  return { error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug') };
}
