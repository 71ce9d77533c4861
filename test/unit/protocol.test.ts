import { describe, expect, it } from 'vitest';
import { AgentToServer, ConsoleToServer, ServerToAgent } from '../../protocol/index.js';

const metrics = {
  cpuPercent: 1,
  memUsedBytes: 1,
  memTotalBytes: 2,
  load: [0, 0, 0],
  diskUsedBytes: 0,
  diskTotalBytes: 0,
  uptimeSec: 1,
  runningExecutions: 0,
  openTerminals: 0,
};
const hello = {
  type: 'hello',
  protocol: 1,
  agentVersion: '1.0.0',
  agentId: 'a1',
  name: 'n',
  hostname: 'h',
  ips: [],
  platform: 'linux',
  arch: 'x64',
  os: 'Debian',
  cpus: 2,
  memoryBytes: 1,
  labels: { role: 'web' },
  capabilities: ['exec'],
};

describe('protocol schemas', () => {
  it('accepts a minimal hello and defaults executions; externalIp is optional', () => {
    const r = AgentToServer.parse(hello);
    expect(r.type === 'hello' && r.executions).toEqual([]);
  });

  it('new optional fields are tolerated (forward compatibility): unknown keys are stripped', () => {
    const r = AgentToServer.parse({ ...hello, someFutureField: { x: 1 } });
    expect(r).not.toHaveProperty('someFutureField');
    const w = ServerToAgent.parse({ type: 'welcome', protocol: 2, agentId: 'a', heartbeatIntervalMs: 5000, serverTime: 1, future: true });
    expect(w.type).toBe('welcome');
  });

  it('rejects unknown types, including prototype names', () => {
    for (const type of ['__proto__', 'constructor', 'toString', 'nope', '', 7, null]) {
      expect(AgentToServer.safeParse({ type }).success, String(type)).toBe(false);
      expect(ServerToAgent.safeParse({ type }).success).toBe(false);
      expect(ConsoleToServer.safeParse({ type }).success).toBe(false);
    }
    expect(AgentToServer.safeParse(JSON.parse('{"__proto__":{"type":"bye","reason":"x"}}')).success).toBe(false);
  });

  it('validates heartbeat metrics', () => {
    expect(AgentToServer.safeParse({ type: 'heartbeat', metrics }).success).toBe(true);
    expect(AgentToServer.safeParse({ type: 'heartbeat', metrics: { ...metrics, cpuPercent: 101 } }).success).toBe(false);
    expect(AgentToServer.safeParse({ type: 'heartbeat', metrics: { ...metrics, load: [1, 2] } }).success).toBe(false);
    expect(AgentToServer.safeParse({ type: 'heartbeat', metrics: { ...metrics, memUsedBytes: -1 } }).success).toBe(false);
    expect(AgentToServer.safeParse({ type: 'heartbeat' }).success).toBe(false);
  });

  it('bounds hello sizes and label keys', () => {
    expect(AgentToServer.safeParse({ ...hello, agentId: 'x'.repeat(129) }).success).toBe(false);
    expect(AgentToServer.safeParse({ ...hello, agentId: '' }).success).toBe(false);
    expect(AgentToServer.safeParse({ ...hello, labels: { 'has space': 'v' } }).success).toBe(false);
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(AgentToServer.safeParse({ ...hello, labels: many }).success).toBe(false);
    expect(AgentToServer.safeParse({ ...hello, ips: Array(65).fill('1.1.1.1') }).success).toBe(false);
    expect(AgentToServer.safeParse({ ...hello, protocol: 0 }).success).toBe(false);
  });

  it('accepts every documented server→agent command and the console messages', () => {
    const ok = [
      { type: 'restart', reason: 'r' },
      { type: 'error', code: 'unknown_type', message: 'm', ref: 'x' },
      { type: 'exec.run', executionId: 'e', taskId: 't', script: 'echo', interpreter: '/bin/sh', args: [], env: {}, cwd: null, timeoutSec: 5 },
      { type: 'exec.cancel', executionId: 'e', reason: 'r' },
      { type: 'exec.resume', executionId: 'e', fromSeq: 3 },
      { type: 'exec.ack', executionId: 'e' },
      { type: 'term.open', sessionId: 's', cols: 80, rows: 24 },
      { type: 'term.resize', sessionId: 's', cols: 80, rows: 24 },
      { type: 'term.close', sessionId: 's', reason: 'r' },
      { type: 'term.ack', sessionId: 's', bytes: 10 },
      { type: 'update', rolloutId: 'r', version: '1', url: 'http://x', size: 1, sha256: 'a'.repeat(64), signature: 's' },
    ];
    for (const m of ok) expect(ServerToAgent.safeParse(m).success, m.type).toBe(true);
    expect(ServerToAgent.safeParse({ type: 'update', rolloutId: 'r', version: '1', url: 'u', size: 1, sha256: 'XYZ', signature: 's' }).success).toBe(false);
    expect(ConsoleToServer.safeParse({ type: 'ping' }).success).toBe(true);
    expect(ConsoleToServer.safeParse({ type: 'term.open', ref: 'r', agentId: 'a', cols: 0, rows: 24 }).success).toBe(false);
  });
});

describe('typed protocol strings', () => {
  it('exec.rejected codes: sent ones win; an agent without codes is read from its two fixed wordings', async () => {
    const { rejectCodeOf, RejectCode } = await import('../../protocol/index.js');
    expect(rejectCodeOf({ code: RejectCode.duplicate, reason: 'anything' })).toBe('duplicate');
    expect(rejectCodeOf({ code: 'policy_denied', reason: 'duplicate: but the code says otherwise' })).toBe('policy_denied');
    expect(rejectCodeOf({ reason: 'duplicate: this agent already received this execution' })).toBe(RejectCode.duplicate);
    expect(rejectCodeOf({ reason: 'unknown execution (not running here)' })).toBe(RejectCode.unknownExecution);
    expect(rejectCodeOf({ reason: 'too many running executions' })).toBeUndefined();
  });
});
