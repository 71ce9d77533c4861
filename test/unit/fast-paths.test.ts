import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  AgentToServer,
  ConsoleTermAck,
  Heartbeat,
  isExactHeartbeat,
  isExactTermAck,
  MessageDispatcher,
  TermAck,
  type AgentToServer as AgentMsg,
} from '../../protocol/index.js';

const metrics = () => ({
  cpuPercent: 12.5,
  memUsedBytes: 1_500_000_000,
  memTotalBytes: 4 * 2 ** 30,
  load: [0.5, 0.4, 0.3],
  diskUsedBytes: 10 * 2 ** 30,
  diskTotalBytes: 40 * 2 ** 30,
  uptimeSec: 1234.5,
  runningExecutions: 0,
  openTerminals: 2,
});
const beat = (extra: Record<string, unknown> = {}) => ({ type: 'heartbeat', metrics: metrics(), ...extra });
/** As a message arrives: JSON text parsed (so 1e999 is Infinity, "__proto__" an own key). */
const wire = (text: string): unknown => JSON.parse(text);

/** What the fast path must equal: the schema accepts the message and returns it unchanged. */
const schemaKeepsAsIs = (raw: unknown): boolean => {
  const r = Heartbeat.safeParse(raw);
  return r.success && isDeepStrictEqual(r.data, raw);
};

describe('isExactHeartbeat (hand-checked heartbeat, zod as the authority)', () => {
  it('accepts real heartbeats, with and without seq, exactly as the schema returns them', () => {
    for (const raw of [beat(), beat({ seq: 0 }), beat({ seq: 41 }), wire(JSON.stringify(beat({ seq: 7 })))]) {
      expect(isExactHeartbeat(raw)).toBe(true);
      expect(schemaKeepsAsIs(raw)).toBe(true);
    }
  });

  it('refuses, and leaves to the schema, every message that is invalid or that the schema would change', () => {
    const m = metrics();
    const cases: unknown[] = [
      null,
      'heartbeat',
      [beat()],
      { ...beat(), type: 'bye' },
      { type: 'heartbeat' },
      { type: 'heartbeat', seq: 1 },
      beat({ extra: 1 }),
      beat({ seq: -1 }),
      beat({ seq: 1.5 }),
      beat({ seq: 2 ** 53 }),
      beat({ seq: '1' }),
      { ...beat(), metrics: [] },
      { ...beat(), metrics: null },
      { ...beat(), metrics: { ...m, extra: 0 } },
      { ...beat(), metrics: { ...m, cpuPercent: 100.1 } },
      { ...beat(), metrics: { ...m, cpuPercent: -1 } },
      { ...beat(), metrics: { ...m, cpuPercent: '5' } },
      { ...beat(), metrics: { ...m, memUsedBytes: 1.5 } },
      { ...beat(), metrics: { ...m, memTotalBytes: -1 } },
      { ...beat(), metrics: { ...m, diskUsedBytes: 2 ** 53 } },
      { ...beat(), metrics: { ...m, openTerminals: null } },
      { ...beat(), metrics: { ...m, uptimeSec: -0.5 } },
      { ...beat(), metrics: { ...m, load: [1, 2] } },
      { ...beat(), metrics: { ...m, load: [1, 2, 3, 4] } },
      { ...beat(), metrics: { ...m, load: [1, '2', 3] } },
      { ...beat(), metrics: { ...m, load: { 0: 1, 1: 2, 2: 3, length: 3 } } },
      wire(
        '{"type":"heartbeat","metrics":{"cpuPercent":1,"memUsedBytes":1,"memTotalBytes":1,"load":[1,1,1],"diskUsedBytes":1,"diskTotalBytes":1,"uptimeSec":1e999,"runningExecutions":0,"openTerminals":0}}',
      ),
      wire('{"type":"heartbeat","__proto__":{"x":1},"metrics":' + JSON.stringify(m) + '}'),
      wire('{"type":"heartbeat","metrics":{"__proto__":{},' + JSON.stringify(m).slice(1) + '}'),
    ];
    const missing = Object.keys(m).map((k) => {
      const copy: Record<string, unknown> = { ...m };
      delete copy[k];
      return { ...beat(), metrics: copy };
    });
    for (const raw of [...cases, ...missing]) {
      expect(isExactHeartbeat(raw), JSON.stringify(raw)).toBe(false);
      expect(schemaKeepsAsIs(raw), JSON.stringify(raw)).toBe(false);
    }
  });

  it('agrees with the schema on 20,000 random heartbeat-like messages', () => {
    // A small deterministic generator (no flaky seeds): values around every bound of the schema.
    let s = 0x2545f491;
    const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const values = [
      0,
      -0,
      1,
      99.9,
      100,
      100.5,
      -1,
      1.5,
      2 ** 53 - 1,
      2 ** 53,
      1e300,
      Infinity,
      '1',
      null,
      true,
      [],
      {},
      [1, 2, 3],
      [1, 2],
      [0.1, 0.2, 0.3, 0.4],
    ];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const m: Record<string, unknown> = metrics();
      for (const k of Object.keys(m)) {
        const r = rnd();
        if (r < 0.06) m[k] = pick(values);
        else if (r < 0.07) delete m[k];
      }
      if (rnd() < 0.03) m[pick(['x', 'cpu', 'toString'])] = 1;
      const raw: Record<string, unknown> = { type: rnd() < 0.98 ? 'heartbeat' : 'hello', metrics: rnd() < 0.98 ? m : pick(values) };
      if (rnd() < 0.5) raw.seq = rnd() < 0.8 ? Math.floor(rnd() * 1000) : pick(values);
      if (rnd() < 0.02) raw[pick(['ref', 'extra'])] = 'x';
      const fast = isExactHeartbeat(raw);
      if (fast) accepted++;
      expect(fast, JSON.stringify(raw)).toBe(schemaKeepsAsIs(raw));
    }
    // Both sides of the comparison were exercised.
    expect(accepted).toBeGreaterThan(1000);
    expect(accepted).toBeLessThan(19_000);
  });

  it('the agent dispatcher decodes a valid heartbeat through it and still refuses an invalid one with the schema', () => {
    const d = new MessageDispatcher<AgentMsg, null>(AgentToServer, {}, { heartbeat: isExactHeartbeat });
    const ok = d.decode(JSON.stringify(beat({ seq: 3 })));
    expect(ok).toEqual({ ok: true, msg: beat({ seq: 3 }) });
    const stripped = d.decode(JSON.stringify(beat({ extra: 1 })));
    // The schema's answer: unknown keys stripped, as without the fast path.
    expect(stripped).toEqual({ ok: true, msg: beat() });
    const bad = d.decode(JSON.stringify({ ...beat(), metrics: { ...metrics(), cpuPercent: 101 } }));
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.refusal).toMatchObject({ code: 'invalid_message', ref: 'heartbeat' });
    if (!bad.ok) expect(bad.refusal.message).toMatch(/^invalid heartbeat: metrics\.cpuPercent/);
  });
});

describe('isExactTermAck (hand-checked term.ack, zod as the authority)', () => {
  /** Both channels' schemas (console → server, server → agent) accept it and return it unchanged. */
  const schemasKeepAsIs = (raw: unknown): boolean =>
    [ConsoleTermAck, TermAck].every((schema) => {
      const r = schema.safeParse(raw);
      return r.success && isDeepStrictEqual(r.data, raw);
    });

  it('agrees with both schemas on valid, invalid and 20,000 random acks', () => {
    const ack = (extra: Record<string, unknown> = {}) => ({ type: 'term.ack', sessionId: 'b3a1c2d4-0000-4000-8000-000000000001', bytes: 16384, ...extra });
    const fixed: unknown[] = [
      ack(),
      ack({ bytes: 0 }),
      ack({ sessionId: 'x' }),
      ack({ sessionId: 'x'.repeat(128) }),
      wire(JSON.stringify(ack())),
      null,
      [ack()],
      ack({ type: 'term.open' }),
      ack({ sessionId: '' }),
      ack({ sessionId: 'x'.repeat(129) }),
      ack({ sessionId: 7 }),
      ack({ bytes: -1 }),
      ack({ bytes: 1.5 }),
      ack({ bytes: 2 ** 53 }),
      ack({ bytes: '5' }),
      ack({ extra: 1 }),
      { type: 'term.ack', sessionId: 's' },
      { type: 'term.ack', bytes: 1 },
      wire('{"type":"term.ack","sessionId":"s","bytes":1e999}'),
      wire('{"type":"term.ack","__proto__":{"x":1},"sessionId":"s","bytes":1}'),
    ];
    let s = 0x1234567;
    const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const values = [0, 1, -1, 1.5, 2 ** 53 - 1, 2 ** 53, Infinity, '1', '', 'x'.repeat(128), 'x'.repeat(129), null, true, [], {}];
    const random: unknown[] = [];
    for (let i = 0; i < 20_000; i++) {
      const raw: Record<string, unknown> = ack({ bytes: Math.floor(rnd() * 1e6) });
      for (const k of ['type', 'sessionId', 'bytes']) {
        const r = rnd();
        if (r < 0.1) raw[k] = pick(values);
        else if (r < 0.13) delete raw[k];
      }
      if (rnd() < 0.03) raw[pick(['ref', 'extra', 'toString'])] = 1;
      random.push(raw);
    }
    let accepted = 0;
    for (const raw of [...fixed, ...random]) {
      const fast = isExactTermAck(raw);
      if (fast) accepted++;
      expect(fast, JSON.stringify(raw)).toBe(schemasKeepAsIs(raw));
    }
    expect(accepted).toBeGreaterThan(5000);
    expect(accepted).toBeLessThan(19_000);
  });
});
