/** Minimal structured JSON logger for the agent (stdout → journald). Never logs secrets or terminal bytes. */
export interface AgentLog {
  error(o: object, msg: string): void;
  warn(o: object, msg: string): void;
  info(o: object, msg: string): void;
  debug(o: object, msg: string): void;
}

const LEVELS = { error: 0, warn: 1, info: 2, debug: 3 } as const;

export function createAgentLog(level: keyof typeof LEVELS, base: Record<string, unknown> = {}): AgentLog {
  const max = LEVELS[level];
  const emit = (lvl: keyof typeof LEVELS) => (o: object, msg: string) => {
    if (LEVELS[lvl] > max) return;
    process.stdout.write(`${JSON.stringify({ level: lvl, time: new Date().toISOString(), svc: 'muster-agent', ...base, ...o, msg })}\n`);
  };
  return { error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug') };
}
