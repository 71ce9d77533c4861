import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  AgentToServer,
  ConsoleTermAck,
  Heartbeat,
  Hello,
  isExactHeartbeat,
  isExactHello,
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
  it('accepts real heartbeats, with and without seq and rttMs, exactly as the schema returns them', () => {
    for (const raw of [
      beat(),
      beat({ seq: 0 }),
      beat({ seq: 41 }),
      wire(JSON.stringify(beat({ seq: 7 }))),
      beat({ rttMs: 0 }),
      beat({ seq: 3, rttMs: 0.42 }),
      beat({ rttMs: 600_000 }),
      wire(JSON.stringify(beat({ seq: 9, rttMs: 12.5 }))),
    ]) {
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
      beat({ rttMs: -0.01 }),
      beat({ rttMs: 600_000.5 }),
      beat({ rttMs: '3' }),
      beat({ rttMs: null }),
      beat({ seq: 1, rttMs: Infinity }),
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
      if (rnd() < 0.3) raw.rttMs = rnd() < 0.7 ? rnd() * 50 : pick([...values, 600_000, 600_001]);
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

describe('isExactHello (hand-checked hello, zod as the authority)', () => {
  /** The schema accepts it and returns it unchanged (no default added, nothing stripped). */
  const schemaKeepsAsIs = (raw: unknown): boolean => {
    const r = Hello.safeParse(raw);
    return r.success && isDeepStrictEqual(r.data, raw);
  };
  // As agent/policy.ts reports them: no file (everything allowed), and a lockdown with its error.
  const policyDefault = () => ({
    source: 'default',
    path: '/etc/muster-agent/policy.json',
    terminals: true,
    exec: true,
    interpreters: null,
    runAs: null,
    requireSignedScripts: false,
    scriptPublicKeys: [],
    allowedPaths: null,
    remoteConfig: true,
    terminalIdleTimeoutMaxSec: null,
    execBufferMaxBytes: null,
  });
  const policyFile = () => ({
    source: 'file',
    path: '/etc/muster-agent/policy.json',
    error: 'x',
    terminals: false,
    exec: true,
    interpreters: ['bash', 'python3'],
    runAs: 'nobody',
    requireSignedScripts: true,
    scriptPublicKeys: ['A'.repeat(44)],
    allowedPaths: ['/etc/app/'],
    terminalIdleTimeoutMaxSec: 600,
    execBufferMaxBytes: 1 << 20,
  });
  /** The real agent's hello (agent/main.ts buildHello) and the simulator's (bench/sim/worker.mjs) are this shape. */
  const hello = (extra: Record<string, unknown> = {}) => ({
    type: 'hello',
    protocol: 1,
    agentVersion: '1.4.0',
    agentId: 'a1b2c3d4-0000-4000-8000-000000000001',
    name: 'web-01',
    hostname: 'web-01.example.org',
    ips: ['10.0.0.5', 'fe80::1'],
    externalIp: null,
    platform: 'linux',
    arch: 'x64',
    os: 'Debian GNU/Linux 12 (bookworm)',
    cpus: 8,
    memoryBytes: 16 * 2 ** 30,
    labels: { role: 'web', 'env/zone': 'eu-1', 'a.b_c-d': '' },
    capabilities: ['exec', 'pty', 'files', 'config', 'term-files'],
    executions: [
      { executionId: 'e-1', state: 'running', nextSeq: 12 },
      { executionId: 'e-2', state: 'finished', nextSeq: 0 },
    ],
    policy: policyDefault(),
    ...extra,
  });
  const without = (k: string, o: Record<string, unknown> = hello()) => {
    const copy = { ...o };
    delete copy[k];
    return copy;
  };

  it('accepts real hellos exactly as the schema returns them', () => {
    const sim = without('policy', hello({ agentVersion: '0.0.0-sim', executions: [], labels: { sim: 'true', shard: '3' } }));
    const cases = [
      hello(),
      sim,
      without('externalIp'),
      hello({ externalIp: '203.0.113.7' }),
      hello({ policy: policyFile() }),
      hello({ policy: without('remoteConfig', policyDefault()) }),
      hello({ labels: {}, ips: [], capabilities: [] }),
      hello({ labels: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'v'.repeat(255)])) }),
      hello({ name: 'n'.repeat(255), agentId: 'i'.repeat(128), agentVersion: 'v'.repeat(64) }),
      wire(JSON.stringify(hello())),
    ];
    for (const raw of cases) {
      expect(isExactHello(raw), JSON.stringify(raw)).toBe(true);
      expect(schemaKeepsAsIs(raw), JSON.stringify(raw)).toBe(true);
    }
  });

  it('refuses, and leaves to the schema, every hello that is invalid or that the schema would change', () => {
    const cases: unknown[] = [
      null,
      [hello()],
      hello({ type: 'heartbeat' }),
      // The schema adds executions: [] (the server then sees the default, as before).
      without('executions'),
      hello({ extra: 1 }),
      hello({ protocol: 0 }),
      hello({ protocol: 1.5 }),
      hello({ protocol: '1' }),
      hello({ agentId: '' }),
      hello({ agentId: 'i'.repeat(129) }),
      hello({ name: '' }),
      hello({ hostname: 'h'.repeat(256) }),
      hello({ agentVersion: 'v'.repeat(65) }),
      hello({ platform: 'p'.repeat(33) }),
      hello({ os: 7 }),
      hello({ ips: ['1'.repeat(65)] }),
      hello({ ips: Array.from({ length: 65 }, () => '10.0.0.1') }),
      hello({ ips: '10.0.0.1' }),
      hello({ externalIp: 5 }),
      hello({ cpus: -1 }),
      hello({ memoryBytes: 2 ** 53 }),
      hello({ labels: null }),
      hello({ labels: [] }),
      hello({ labels: { 'bad key': 'v' } }),
      hello({ labels: { '': 'v' } }),
      hello({ labels: { ['k'.repeat(64)]: 'v' } }),
      hello({ labels: { k: 'v'.repeat(256) } }),
      hello({ labels: { k: 1 } }),
      hello({ labels: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) }),
      hello({ capabilities: [1] }),
      hello({ executions: [{ executionId: 'e', state: 'lost', nextSeq: 1 }] }),
      hello({ executions: [{ executionId: 'e', state: 'running', nextSeq: -1 }] }),
      hello({ executions: [{ executionId: 'e', state: 'running', nextSeq: 1, extra: 1 }] }),
      hello({ executions: [{ executionId: 'e', state: 'running' }] }),
      hello({ executions: [{ executionId: '', state: 'running', nextSeq: 1 }] }),
      hello({ executions: {} }),
      hello({ policy: null }),
      hello({ policy: { ...policyDefault(), source: 'other' } }),
      hello({ policy: { ...policyDefault(), extra: true } }),
      hello({ policy: without('allowedPaths', policyDefault()) }),
      hello({ policy: { ...policyDefault(), interpreters: ['x'.repeat(256)] } }),
      hello({ policy: { ...policyDefault(), runAs: 'x'.repeat(65) } }),
      hello({ policy: { ...policyDefault(), terminalIdleTimeoutMaxSec: 0 } }),
      hello({ policy: { ...policyDefault(), execBufferMaxBytes: 1.5 } }),
      hello({ policy: { ...policyDefault(), remoteConfig: null } }),
      hello({ policy: { ...policyDefault(), scriptPublicKeys: null } }),
      wire(JSON.stringify(hello()).replace('"cpus":8', '"cpus":1e999')),
      wire(JSON.stringify(hello()).replace('{"type"', '{"__proto__":{"x":1},"type"')),
      // An own "__proto__" label: the record zod builds would not keep it as its own key.
      wire(JSON.stringify(hello()).replace('"labels":{', '"labels":{"__proto__":"x",')),
    ];
    const missing = [
      'protocol',
      'agentVersion',
      'agentId',
      'name',
      'hostname',
      'ips',
      'platform',
      'arch',
      'os',
      'cpus',
      'memoryBytes',
      'labels',
      'capabilities',
    ].map((k) => without(k));
    for (const raw of [...cases, ...missing]) {
      expect(isExactHello(raw), JSON.stringify(raw)).toBe(false);
      expect(schemaKeepsAsIs(raw), JSON.stringify(raw)).toBe(false);
    }
  });

  it('agrees with the schema on 20,000 random hello-like messages', () => {
    let s = 0x5eed1e55;
    const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    const values = [
      0,
      1,
      -1,
      1.5,
      2 ** 53 - 1,
      2 ** 53,
      Infinity,
      '1',
      '',
      'x'.repeat(32),
      'x'.repeat(33),
      'x'.repeat(64),
      'x'.repeat(65),
      null,
      true,
      false,
      [],
      {},
      ['a'],
      [1],
      { a: 'b' },
    ];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const raw: Record<string, unknown> = hello({ cpus: Math.floor(rnd() * 64), policy: rnd() < 0.5 ? policyDefault() : policyFile() });
      for (const k of Object.keys(raw)) {
        const r = rnd();
        if (r < 0.025) raw[k] = pick(values);
        else if (r < 0.03) delete raw[k];
      }
      const policy = raw.policy;
      if (policy && typeof policy === 'object' && !Array.isArray(policy)) {
        const p = policy as Record<string, unknown>;
        for (const k of Object.keys(p)) {
          const r = rnd();
          if (r < 0.02) p[k] = pick(values);
          else if (r < 0.025) delete p[k];
        }
      }
      if (rnd() < 0.02) raw[pick(['extra', 'seq', 'toString'])] = 1;
      if (rnd() < 0.03) raw.labels = { [pick(['ok', 'a b', '', 'x'.repeat(63), 'x'.repeat(64), 'toString'])]: pick(values) };
      if (rnd() < 0.03) raw.executions = [{ executionId: pick(values), state: pick(['running', 'finished', 'lost', 1]), nextSeq: pick(values) }];
      const fast = isExactHello(raw);
      if (fast) accepted++;
      expect(fast, JSON.stringify(raw)).toBe(schemaKeepsAsIs(raw));
    }
    expect(accepted).toBeGreaterThan(5000);
    expect(accepted).toBeLessThan(19_000);
  });

  it("the agent dispatcher decodes a valid hello through it and refuses a bad one with the schema's words", () => {
    const d = new MessageDispatcher<AgentMsg, null>(AgentToServer, {}, { hello: isExactHello });
    expect(d.decode(JSON.stringify(hello()))).toEqual({ ok: true, msg: hello() });
    // Left to the schema: its default added, as without the fast path.
    expect(d.decode(JSON.stringify(without('executions')))).toEqual({ ok: true, msg: hello({ executions: [] }) });
    const bad = d.decode(JSON.stringify(hello({ labels: { 'bad key': 'v' } })));
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.refusal).toMatchObject({ code: 'invalid_message', ref: 'hello' });
    if (!bad.ok) expect(bad.refusal.message).toMatch(/^invalid hello: labels/);
  });
});
