import type { AgentSettings, HostPolicy } from '../protocol/index.js';
import type { AgentConfig } from './config.js';
import type { AgentLogLevel } from './log.js';

/** The settings in force on this agent: its own config, the server's live configuration over it, the host policy over both. */
export interface LiveSettings {
  /** null: the interval the server's welcome names. */
  heartbeatIntervalSec: number | null;
  logLevel: AgentLogLevel;
  /** The config file's labels with the pushed ones merged over them. */
  labels: Record<string, string>;
  terminalIdleTimeoutSec: number;
  execBufferBytes: number;
  /** Per pushed key not in force as sent: why (limited or refused by host policy). */
  notes: Record<string, string>;
}

/**
 * Computes what is in force (pure). Precedence: host policy > server's live configuration > the
 * agent's own config (file < environment < flags). The policy's caps apply to local values too.
 */
export function liveSettings(
  cfg: Pick<AgentConfig, 'logLevel' | 'terminalIdleTimeoutSec' | 'execBufferBytes'>,
  fileLabels: Record<string, string>,
  policy: Pick<HostPolicy, 'remoteConfig' | 'terminalIdleTimeoutMaxSec' | 'execBufferMaxBytes'>,
  pushed: AgentSettings,
): LiveSettings {
  const notes: Record<string, string> = {};
  let p: AgentSettings = pushed;
  if (policy.remoteConfig === false) {
    for (const k of Object.keys(pushed)) notes[k] = 'refused: the host policy forbids remote configuration (remoteConfig: false)';
    p = {};
  }
  const cap = (key: 'terminalIdleTimeoutSec' | 'execBufferBytes', local: number, max: number | null | undefined, unit: string): number => {
    const v = p[key] ?? local;
    if (max != null && v > max) {
      if (p[key] !== undefined) notes[key] = `limited to ${max}${unit} by the host policy (asked ${v}${unit})`;
      return max;
    }
    return v;
  };
  return {
    heartbeatIntervalSec: p.heartbeatIntervalSec ?? null,
    logLevel: p.logLevel ?? cfg.logLevel,
    labels: { ...fileLabels, ...(p.labels ?? {}) },
    terminalIdleTimeoutSec: cap('terminalIdleTimeoutSec', cfg.terminalIdleTimeoutSec, policy.terminalIdleTimeoutMaxSec, ' s'),
    execBufferBytes: cap('execBufferBytes', cfg.execBufferBytes, policy.execBufferMaxBytes, ' bytes'),
    notes,
  };
}
