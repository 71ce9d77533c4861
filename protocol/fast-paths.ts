import { HEARTBEAT_RTT_MAX_MS } from './agent-messages.js';

/**
 * Hand-written checks for the messages a large fleet sends thousands of times a second (the
 * heartbeat, the terminal's acks) or all at once (the hello of every agent coming back after a
 * restart), run before the zod schema. A check accepts only what the schema accepts AND returns
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

/** Exactly the shape of `Heartbeat` (protocol/agent-messages.ts): type, metrics, optional seq and rttMs, no other key. */
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
    } else if (k === 'rttMs') {
      const v = raw[k];
      if (!isNum(v) || v < 0 || v > HEARTBEAT_RTT_MAX_MS) return false;
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

/** z.string().max(max) (and .min(min)) */
const isStr = (v: unknown, max: number, min = 0): boolean => typeof v === 'string' && v.length >= min && v.length <= max;
/** z.array(z.string().max(itemMax)).max(max) */
function isStrArray(v: unknown, max: number, itemMax: number): boolean {
  if (!Array.isArray(v) || v.length > max) return false;
  for (let i = 0; i < v.length; i++) if (!isStr(v[i], itemMax)) return false;
  return true;
}
const LABEL_KEY = /^[A-Za-z0-9_.\/-]+$/;

/**
 * Exactly `Labels` (protocol/common.ts): at most 64 keys of 1–63 characters [A-Za-z0-9_./-], string
 * values of at most 255. `__proto__` (an own key when JSON.parse makes it) goes to the schema: the
 * object zod builds would not have it as an own key.
 */
export function isExactLabels(v: unknown): boolean {
  if (!isRecord(v)) return false;
  let n = 0;
  for (const k in v) {
    if (++n > 64 || k.length > 63 || k === '__proto__' || !LABEL_KEY.test(k) || !isStr(v[k], 255)) return false;
  }
  return true;
}

/** z.number().int().positive().nullable().optional() once the key is there */
const isPositiveOrNull = (v: unknown): boolean => v === null || (typeof v === 'number' && Number.isSafeInteger(v) && v > 0);

/** Exactly `HostPolicy` (protocol/policy.ts), every key the schema knows and no other. */
export function isExactHostPolicy(p: unknown): boolean {
  if (!isRecord(p)) return false;
  let required = 0;
  for (const k in p) {
    const v = p[k];
    switch (k) {
      case 'source':
        if (v !== 'default' && v !== 'file' && v !== 'lockdown') return false;
        required++;
        break;
      case 'path':
        if (!isStr(v, 4096)) return false;
        required++;
        break;
      case 'error':
        if (!isStr(v, 1024)) return false;
        break;
      case 'terminals':
      case 'exec':
      case 'requireSignedScripts':
        if (typeof v !== 'boolean') return false;
        required++;
        break;
      case 'interpreters':
        if (v !== null && !isStrArray(v, 64, 255)) return false;
        required++;
        break;
      case 'runAs':
        if (v !== null && !isStr(v, 64)) return false;
        required++;
        break;
      case 'scriptPublicKeys':
        if (!isStrArray(v, 64, 64)) return false;
        required++;
        break;
      case 'allowedPaths':
        if (v !== null && !isStrArray(v, 256, 4096)) return false;
        required++;
        break;
      case 'remoteConfig':
        if (typeof v !== 'boolean') return false;
        break;
      case 'terminalIdleTimeoutMaxSec':
      case 'execBufferMaxBytes':
        if (!isPositiveOrNull(v)) return false;
        break;
      default:
        return false;
    }
  }
  return required === 9;
}

/** Exactly `HelloExecution`: executionId (1–128 characters), state, nextSeq, no other key. */
function isExactHelloExecution(e: unknown): boolean {
  if (!isRecord(e)) return false;
  let n = 0;
  for (const k in e) {
    n++;
    const v = e[k];
    if (k === 'executionId') {
      if (!isStr(v, 128, 1)) return false;
    } else if (k === 'state') {
      if (v !== 'running' && v !== 'finished') return false;
    } else if (k === 'nextSeq') {
      if (!isCount(v)) return false;
    } else return false;
  }
  return n === 3;
}

/**
 * Exactly the shape of `Hello` (protocol/agent-messages.ts) as agents send it: every required key,
 * `executions` present (the schema would add its default), the optional `externalIp` and
 * `policy`, no other key. One arrives per connect: a restarted server meets tens of thousands at
 * once, and the schema's walk of it cost about a tenth of a millisecond each.
 */
export function isExactHello(raw: unknown): boolean {
  if (!isRecord(raw) || raw.type !== 'hello') return false;
  let required = 0;
  for (const k in raw) {
    const v = raw[k];
    switch (k) {
      case 'type':
        break;
      case 'protocol':
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) return false;
        required++;
        break;
      case 'agentVersion':
        if (!isStr(v, 64)) return false;
        required++;
        break;
      case 'agentId':
        if (!isStr(v, 128, 1)) return false;
        required++;
        break;
      case 'name':
      case 'hostname':
        if (!isStr(v, 255, 1)) return false;
        required++;
        break;
      case 'ips':
      case 'capabilities':
        if (!isStrArray(v, 64, 64)) return false;
        required++;
        break;
      case 'externalIp':
        if (v !== null && !isStr(v, 64)) return false;
        break;
      case 'platform':
      case 'arch':
        if (!isStr(v, 32)) return false;
        required++;
        break;
      case 'os':
        if (!isStr(v, 255)) return false;
        required++;
        break;
      case 'cpus':
      case 'memoryBytes':
        if (!isCount(v)) return false;
        required++;
        break;
      case 'labels':
        if (!isExactLabels(v)) return false;
        required++;
        break;
      case 'executions':
        if (!Array.isArray(v) || v.length > 10_000) return false;
        for (let i = 0; i < v.length; i++) if (!isExactHelloExecution(v[i])) return false;
        required++;
        break;
      case 'policy':
        if (!isExactHostPolicy(v)) return false;
        break;
      default:
        return false;
    }
  }
  return required === 14;
}
