/** The agent's live settings: server configuration over its own, host policy over both. */
import { describe, expect, it } from 'vitest';
import { liveSettings } from '../../agent/live-config.js';

const cfg = { logLevel: 'info' as const, terminalIdleTimeoutSec: 1800, execBufferBytes: 16 << 20 };
const open = { remoteConfig: true, terminalIdleTimeoutMaxSec: null, execBufferMaxBytes: null };

describe('liveSettings', () => {
  it('pushed values override the agent config; labels merge over the file labels', () => {
    const s = liveSettings(cfg, { role: 'web', env: 'prod' }, open, { logLevel: 'debug', heartbeatIntervalSec: 9, labels: { env: 'stage', tier: 'gold' } });
    expect(s).toEqual({
      heartbeatIntervalSec: 9,
      logLevel: 'debug',
      labels: { role: 'web', env: 'stage', tier: 'gold' },
      terminalIdleTimeoutSec: 1800,
      execBufferBytes: 16 << 20,
      notes: {},
    });
  });

  it('policy caps limit pushed and local values; only pushed keys get a note', () => {
    const s = liveSettings(cfg, {}, { ...open, terminalIdleTimeoutMaxSec: 60, execBufferMaxBytes: 1 << 20 }, { terminalIdleTimeoutSec: 3600 });
    expect(s.terminalIdleTimeoutSec).toBe(60);
    expect(s.execBufferBytes).toBe(1 << 20);
    expect(Object.keys(s.notes)).toEqual(['terminalIdleTimeoutSec']);
    expect(liveSettings(cfg, {}, { ...open, terminalIdleTimeoutMaxSec: 60 }, { terminalIdleTimeoutSec: 30 }).terminalIdleTimeoutSec).toBe(30);
  });

  it('remoteConfig: false refuses every pushed key (absent means allowed)', () => {
    const s = liveSettings(cfg, { a: '1' }, { remoteConfig: false }, { logLevel: 'debug', labels: { b: '2' }, heartbeatIntervalSec: 2 });
    expect(s).toMatchObject({ logLevel: 'info', labels: { a: '1' }, heartbeatIntervalSec: null });
    expect(Object.keys(s.notes).sort()).toEqual(['heartbeatIntervalSec', 'labels', 'logLevel']);
    expect(liveSettings(cfg, {}, {}, { logLevel: 'warn' }).logLevel).toBe('warn');
  });
});
