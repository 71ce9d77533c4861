/**
 * Hand-written checks for the one message a large fleet sends thousands of times a second (the
 * heartbeat), run before the zod schema. A check accepts only what the schema accepts AND returns
 * unchanged (no unknown keys: zod would strip them; every bound the schema has), so an accepted
 * message is exactly what `schema.parse` would have produced. Anything else falls through to the
 * schema, which stays the authority (and words the refusal). test/unit/fast-paths.test.ts compares
 * the two on valid, invalid and random messages.
 */

/** An own-enumerable-key object as JSON.parse makes them (not an array, not null). */
function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
/** z.number().int().nonnegative() */
const isCount = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Exactly the shape of `Metrics` (protocol/common.ts), no other key. */
export function isExactMetrics(m: unknown): boolean {
  if (!isRecord(m)) return false;
  let n = 0;
  for (const k in m) {
    n++;
    const v = m[k];
    switch (k) {
      case 'cpuPercent':
        if (!isNum(v) || v < 0 || v > 100) return false;
        break;
      case 'memUsedBytes':
      case 'memTotalBytes':
      case 'diskUsedBytes':
      case 'diskTotalBytes':
      case 'runningExecutions':
      case 'openTerminals':
        if (!isCount(v)) return false;
        break;
      case 'uptimeSec':
        if (!isNum(v) || v < 0) return false;
        break;
      case 'load':
        if (!Array.isArray(v) || v.length !== 3 || !isNum(v[0]) || !isNum(v[1]) || !isNum(v[2])) return false;
        break;
      default:
        return false;
    }
  }
  return n === 9;
}

/** Exactly the shape of `Heartbeat` (protocol/agent-messages.ts): type, metrics, optional seq, no other key. */
export function isExactHeartbeat(raw: unknown): boolean {
  if (!isRecord(raw) || raw.type !== 'heartbeat') return false;
  let metrics = false;
  for (const k in raw) {
    if (k === 'type') continue;
    if (k === 'metrics') {
      if (!isExactMetrics(raw[k])) return false;
      metrics = true;
    } else if (k === 'seq') {
      if (!isCount(raw[k])) return false;
    } else return false;
  }
  return metrics;
}

/**
 * Exactly the shape of a `term.ack` (console → server ConsoleTermAck, server → agent TermAck: the
 * same schema): type, sessionId (1–128 characters), bytes (a non-negative safe integer), no
 * other key. One arrives per chunk of terminal output a console wrote, and one per batch the
 * server forwards to the agent.
 */
export function isExactTermAck(raw: unknown): boolean {
  if (!isRecord(raw) || raw.type !== 'term.ack') return false;
  let n = 0;
  for (const k in raw) {
    n++;
    const v = raw[k];
    if (k === 'sessionId') {
      if (typeof v !== 'string' || v.length < 1 || v.length > 128) return false;
    } else if (k === 'bytes') {
      if (!isCount(v)) return false;
    } else if (k !== 'type') return false;
  }
  return n === 3;
}
