/** Pure logic of the console's files pages and agent configuration views. */
import { describe, expect, it } from 'vitest';
import {
  asText,
  countsText,
  heldRevisions,
  modeText,
  parseMode,
  parseWaves,
  previousRevision,
  progressOf,
  textCandidate,
  TEXT_MAX_BYTES,
} from '../../web/src/features/files/files.js';
import {
  configRows,
  EMPTY_FORM,
  formFromSettings,
  parseLabels,
  ruleName,
  settingsFromForm,
  settingsSummary,
  type ConfigRule,
  type ConfigStatus,
} from '../../web/src/features/agents/agentConfig.js';

const host = (agentId: string, revision: number, state: 'ok' | 'drifted' | 'missing' = 'ok') => ({
  agentId,
  agentName: agentId,
  revision,
  sha256: null,
  state,
  reason: null,
  updatedAt: '2026-01-01T00:00:00.000Z',
});

describe('files page logic', () => {
  it('formats and parses octal modes, refusing what is not one', () => {
    expect(modeText(0o644)).toBe('0644');
    expect(modeText(0o4755)).toBe('04755');
    expect(modeText(0o7)).toBe('0007');
    expect(parseMode('640')).toBe(0o640);
    expect(parseMode(' 0640 ')).toBe(0o640);
    expect(parseMode('4755')).toBe(0o4755);
    for (const bad of ['', '64', '0988', 'rw-r--r--', '12345', '0x1a4']) expect(parseMode(bad)).toBeNull();
  });

  it('splits waves into counts and percentages', () => {
    expect(parseWaves('1, 10%,  100%')).toEqual([1, '10%', '100%']);
    expect(parseWaves(' ')).toEqual([]);
  });

  it('counts progress over final target states only', () => {
    expect(progressOf({ counts: { applied: 2, pending: 1, sending: 1 }, total: 4 })).toEqual({ done: 2, failed: 0, percent: 50 });
    expect(progressOf({ counts: { applied: 1, unchanged: 1, failed: 1, skipped: 1 }, total: 4 })).toEqual({ done: 4, failed: 1, percent: 100 });
    expect(progressOf({ counts: {}, total: 0 }).percent).toBe(100);
    expect(countsText({ failed: 1, applied: 2, pending: 0 })).toBe('applied 2 · failed 1');
  });

  it('rolls back to the revision before the newest one a host holds, as the server does', () => {
    expect(previousRevision([host('a', 3), host('b', 2)], 4)).toBe(2);
    expect(previousRevision([], 4)).toBe(3);
    expect(previousRevision([host('a', 1)], 2)).toBeNull();
    expect([...heldRevisions([host('a', 3), host('b', 3), host('c', 1)])]).toEqual([
      [3, 2],
      [1, 1],
    ]);
  });

  it('shows text only: NUL bytes or invalid UTF-8 are binary; large revisions are not fetched', () => {
    expect(asText(new TextEncoder().encode('listen 80;\nserver_name é;\n'))).toBe('listen 80;\nserver_name é;\n');
    expect(asText(new Uint8Array([0x6c, 0x00, 0x6d]))).toBeNull();
    expect(asText(new Uint8Array([0xff, 0xfe, 0x41]))).toBeNull();
    expect(textCandidate({ size: TEXT_MAX_BYTES })).toBe(true);
    expect(textCandidate({ size: TEXT_MAX_BYTES + 1 })).toBe(false);
  });
});

const rule = (id: string, over: Partial<ConfigRule>): ConfigRule => ({
  id,
  agentId: null,
  selector: 'all',
  priority: 0,
  description: '',
  settings: {},
  createdBy: 'admin',
  updatedBy: 'admin',
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
  ...over,
});
const effective = { heartbeatIntervalSec: 5, logLevel: 'info', labels: { role: 'web' }, terminalIdleTimeoutSec: 1800, execBufferBytes: 1_048_576 };

describe('agent configuration logic', () => {
  const sel = rule('r1', {
    selector: 'labels.role == "web"',
    priority: 5,
    settings: { logLevel: 'debug', terminalIdleTimeoutSec: 3600, labels: { tier: 'gold' } },
  });
  const own = rule('r2', { agentId: 'a1', selector: null, settings: { logLevel: 'warn', labels: { zone: 'b' } }, description: 'debugging' });

  it('names, per setting, the winning rule (every rule for labels), the value in force, and the host policy that overrode it', () => {
    const st: ConfigStatus = {
      agentId: 'a1',
      name: 'web-1',
      online: true,
      supported: true,
      state: 'applied',
      revision: 'rev2',
      desired: { logLevel: 'warn', terminalIdleTimeoutSec: 3600, labels: { tier: 'gold', zone: 'b' } },
      rules: ['r1', 'r2'],
      applied: {
        revision: 'rev2',
        at: '2026-01-01T00:00:00.000Z',
        effective: { ...effective, logLevel: 'warn', terminalIdleTimeoutSec: 60, labels: { role: 'web', tier: 'gold', zone: 'b' } },
        notes: { terminalIdleTimeoutSec: 'limited to 60 s by the host policy (asked 3600 s)' },
      },
    };
    const rows = Object.fromEntries(configRows(st, [sel, own]).map((r) => [r.key, r]));
    expect(rows['logLevel']).toMatchObject({ effective: 'warn', desired: 'warn', pending: false, policy: null });
    expect(rows['logLevel']!.setBy.map((r) => r.id)).toEqual(['r2']);
    expect(rows['labels']!.setBy.map((r) => r.id)).toEqual(['r1', 'r2']);
    expect(rows['labels']).toMatchObject({ desired: 'tier=gold, zone=b', pending: false });
    expect(rows['terminalIdleTimeoutSec']).toMatchObject({
      effective: '60 s',
      desired: '3600 s',
      pending: false,
      policy: expect.stringMatching(/host policy/),
    });
    expect(rows['heartbeatIntervalSec']).toMatchObject({ effective: '5 s', desired: null, setBy: [], pending: false });
    expect(rows['execBufferBytes']!.effective).toBe('1048576 bytes');
  });

  it('marks what the agent has not acknowledged as pending, and an older acknowledgement carries no policy verdict', () => {
    const st: ConfigStatus = {
      agentId: 'a1',
      name: 'web-1',
      online: false,
      supported: true,
      state: 'pending',
      revision: 'rev3',
      desired: { logLevel: 'debug' },
      rules: ['r1'],
      applied: { revision: 'rev1', at: '2026-01-01T00:00:00.000Z', effective, notes: { logLevel: 'refused: remote configuration' } },
    };
    const rows = Object.fromEntries(configRows(st, [sel]).map((r) => [r.key, r]));
    expect(rows['logLevel']).toMatchObject({ effective: 'info', desired: 'debug', pending: true, policy: null });
    expect(rows['heartbeatIntervalSec']!.pending).toBe(false);
    const never = configRows({ ...st, applied: null }, [sel]);
    expect(never.find((r) => r.key === 'logLevel')).toMatchObject({ effective: '', pending: true });
    const serverDefault = configRows({ ...st, applied: { ...st.applied!, effective: { ...effective, heartbeatIntervalSec: null } } }, []);
    expect(serverDefault.find((r) => r.key === 'heartbeatIntervalSec')!.effective).toBe('server default');
  });

  it('parses the rule form, checks bounds, and round-trips settings', () => {
    const bounds = {
      heartbeatIntervalSec: { min: 1, max: 60 },
      terminalIdleTimeoutSec: { min: 10, max: 86_400 },
      execBufferBytes: { min: 1024, max: 1 << 30 },
    };
    expect(settingsFromForm(EMPTY_FORM, bounds)).toEqual({});
    const s = settingsFromForm({ ...EMPTY_FORM, heartbeatIntervalSec: ' 10 ', logLevel: 'debug', labels: 'tier=gold, zone = b ' }, bounds);
    expect(s).toEqual({ heartbeatIntervalSec: 10, logLevel: 'debug', labels: { tier: 'gold', zone: 'b' } });
    expect(settingsFromForm(formFromSettings(s), bounds)).toEqual(s);
    expect(() => settingsFromForm({ ...EMPTY_FORM, heartbeatIntervalSec: '61' }, bounds)).toThrow(/between 1 and 60/);
    expect(() => settingsFromForm({ ...EMPTY_FORM, execBufferBytes: '1.5' }, bounds)).toThrow(/whole number/);
    expect(() => settingsFromForm({ ...EMPTY_FORM, logLevel: 'loud' }, null)).toThrow(/Log level/);
    expect(() => parseLabels('tier')).toThrow(/not key=value/);
    expect(parseLabels('a=b=c')).toEqual({ a: 'b=c' });
    expect(settingsSummary(s)).toBe('heartbeat interval 10 s · log level debug · labels tier=gold, zone=b');
    expect(settingsSummary({})).toBe('nothing');
    expect(ruleName(own, 'web-1')).toBe('debugging (agent web-1)');
    expect(ruleName(sel)).toBe('selector labels.role == "web"');
  });
});
