import pino from 'pino';

export type Logger = pino.Logger;

/** The server's structured JSON logger. Terminal contents and secrets are never logged. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { svc: 'muster-server' }, redact: ['secret', 'password', 'token', '*.secret', '*.password', '*.token'] });
}
