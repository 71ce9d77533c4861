/**
 * Live agent configuration in the console (pure): what each setting is on an agent, what the
 * server wants, which rule asked for it and whether the host policy overrode it; and the rule
 * form's parsing. Shapes as GET /api/agent-config and GET /api/agents/:id/config answer them.
 */
import { AGENT_LOG_LEVELS, AGENT_SETTING_KEYS, type AgentSettings } from '../../../../protocol/agent-config.js';
import type { AgentConfigOverview, AgentConfigRuleView, AgentConfigStatus } from '../../../../protocol/rest.js';

export type SettingKey = keyof AgentSettings;

export type ConfigRule = AgentConfigRuleView;
export type ConfigOverview = AgentConfigOverview;
export type Bound = ConfigOverview['bounds']['heartbeatIntervalSec'];
export type ConfigStatus = AgentConfigStatus;
export type Effective = NonNullable<ConfigStatus['applied']>['effective'];

export const SETTING_LABELS: Record<SettingKey, string> = {
  heartbeatIntervalSec: 'Heartbeat interval',
  logLevel: 'Log level',
  labels: 'Labels',
  terminalIdleTimeoutSec: 'Terminal idle timeout',
  execBufferBytes: 'Output buffer size',
};

/** A setting's value as text (`null`: the server's default heartbeat). */
export function settingText(key: SettingKey, v: unknown): string {
  if (v === undefined) return '';
  if (key === 'heartbeatIntervalSec') return v === null ? 'server default' : `${String(v)} s`;
  if (key === 'terminalIdleTimeoutSec') return `${String(v)} s`;
  if (key === 'execBufferBytes') return `${String(v)} bytes`;
  if (key === 'labels')
    return (
      Object.entries(v as Record<string, string>)
        .map(([k, x]) => `${k}=${x}`)
        .join(', ') || 'none'
    );
  return String(v);
}

/** A rule in a few words: its description, else what it targets. */
export function ruleName(r: ConfigRule, agentName?: string): string {
  const target = r.agentId !== null ? `agent ${agentName ?? r.agentId}` : `selector ${r.selector ?? ''}`;
  return r.description ? `${r.description} (${target})` : target;
}

export interface ConfigRow {
  key: SettingKey;
  label: string;
  /** What the agent runs with (its last acknowledgement); '' when it never acknowledged. */
  effective: string;
  /** What the rules ask for; null: no rule sets it (the agent's own value). */
  desired: string | null;
  /** The rules that set it, last (winning) last; labels merge label by label, so several may. */
  setBy: ConfigRule[];
  /** The host policy's note when it limited or refused the key: the policy wins. */
  policy: string | null;
  /** The server asked for a value the agent has not acknowledged yet. */
  pending: boolean;
}

function sameValue(key: SettingKey, want: unknown, have: unknown): boolean {
  if (key === 'labels') {
    const h = (have ?? {}) as Record<string, string>;
    return Object.entries(want as Record<string, string>).every(([k, v]) => h[k] === v);
  }
  return want === have;
}

/** One row per setting for an agent's page. */
export function configRows(st: ConfigStatus, rules: readonly ConfigRule[]): ConfigRow[] {
  const byId = new Map(rules.map((r) => [r.id, r]));
  const matching = st.rules.map((id) => byId.get(id)).filter((r): r is ConfigRule => Boolean(r));
  const acknowledged = st.applied !== null && st.applied.revision === st.revision;
  return AGENT_SETTING_KEYS.map((key) => {
    const want = st.desired[key];
    const have = st.applied?.effective[key];
    const policy = st.applied?.notes[key] ?? null;
    const setBy = matching.filter((r) => r.settings[key] !== undefined);
    return {
      key,
      label: SETTING_LABELS[key],
      effective: st.applied ? settingText(key, have) : '',
      desired: want === undefined ? null : settingText(key, want),
      setBy: key === 'labels' ? setBy : setBy.slice(-1),
      policy: acknowledged ? policy : null,
      pending: want !== undefined && (!acknowledged || (!policy && !sameValue(key, want, have))),
    };
  });
}

/** The rule form as the admin fills it: text fields, empty for "not set". */
export interface RuleForm {
  heartbeatIntervalSec: string;
  logLevel: string;
  labels: string;
  terminalIdleTimeoutSec: string;
  execBufferBytes: string;
}
export const EMPTY_FORM: RuleForm = { heartbeatIntervalSec: '', logLevel: '', labels: '', terminalIdleTimeoutSec: '', execBufferBytes: '' };

/** `"role=web, tier=gold"` → `{ role: 'web', tier: 'gold' }`; throws naming the bad entry. */
export function parseLabels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`labels: "${part}" is not key=value`);
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}

/** The settings a form asks for, checked against the server's bounds (the server checks again). */
export function settingsFromForm(f: RuleForm, bounds: ConfigOverview['bounds'] | null): AgentSettings {
  const s: AgentSettings = {};
  const num = (key: 'heartbeatIntervalSec' | 'terminalIdleTimeoutSec' | 'execBufferBytes') => {
    const t = f[key].trim();
    if (!t) return;
    const n = Number(t);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${SETTING_LABELS[key]}: a whole number above 0`);
    const b = bounds?.[key];
    if (b && (n < b.min || n > b.max)) throw new Error(`${SETTING_LABELS[key]}: between ${b.min} and ${b.max} (server bounds)`);
    s[key] = n;
  };
  num('heartbeatIntervalSec');
  num('terminalIdleTimeoutSec');
  num('execBufferBytes');
  if (f.logLevel) {
    if (!(AGENT_LOG_LEVELS as readonly string[]).includes(f.logLevel)) throw new Error(`Log level: one of ${AGENT_LOG_LEVELS.join(', ')}`);
    s.logLevel = f.logLevel as AgentSettings['logLevel'];
  }
  if (f.labels.trim()) s.labels = parseLabels(f.labels);
  return s;
}

/** The form for an existing rule's settings. */
export function formFromSettings(s: AgentSettings): RuleForm {
  return {
    heartbeatIntervalSec: s.heartbeatIntervalSec?.toString() ?? '',
    logLevel: s.logLevel ?? '',
    labels: s.labels
      ? Object.entries(s.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')
      : '',
    terminalIdleTimeoutSec: s.terminalIdleTimeoutSec?.toString() ?? '',
    execBufferBytes: s.execBufferBytes?.toString() ?? '',
  };
}

/** Settings in one line for a rules table. */
export function settingsSummary(s: AgentSettings): string {
  return (
    AGENT_SETTING_KEYS.filter((k) => s[k] !== undefined)
      .map((k) => `${SETTING_LABELS[k].toLowerCase()} ${settingText(k, s[k])}`)
      .join(' · ') || 'nothing'
  );
}
