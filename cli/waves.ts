import type { WaveRunState } from '../protocol/index.js';
import { CliError, str, strs, type CommandContext } from './command.js';
import { countsText, table } from './format.js';

/** What every run in waves (a rollout, a distribution) shows. */
export interface WaveRunView {
  id: string;
  state: WaveRunState;
  reason: string | null;
  total: number;
  counts: Partial<Record<string, number>>;
  selector: string;
  waveSpec: (number | string)[];
  currentWave: number;
  failures: number;
  maxFailures: number;
  soakSeconds: number;
  approval: boolean;
  nextWaveAt: string | null;
  targets?: { agentName: string; wave: number; state: string; reason: string | null }[];
}

/** States after which a run never changes again. */
export const FINAL_RUN_STATES: ReadonlySet<WaveRunState> = new Set(['succeeded', 'failed', 'cancelled', 'nothing_to_do']);

/**
 * Prints a run in waves: its state and counts, its waves and gates, and a table of its targets.
 * `what` says what it brings (`version 1.2.0`, `apply revision 3`); `extra` adds columns.
 */
export function showWaveRun(
  noun: string,
  r: WaveRunView,
  what: string,
  out: (s: string) => void,
  o: {
    unit: string;
    waves?: number;
    extra?: { header: string; cell(i: number): string };
  },
): void {
  out(`${noun} ${r.id} ${r.state}${r.reason ? ` (${r.reason})` : ''}: ${what}, ${r.total} ${o.unit}(s): ${countsText(r)}\n`);
  const waves = o.waves ?? r.waveSpec.length;
  out(`selector ${r.selector}, waves ${JSON.stringify(r.waveSpec)}, wave ${r.currentWave + 1}/${waves}, failures ${r.failures}/${r.maxFailures}\n`);
  const gates = [
    r.soakSeconds > 0 ? `soak ${r.soakSeconds} s between waves` : null,
    r.approval ? 'each wave waits for approval' : null,
    r.nextWaveAt ? `next wave at ${r.nextWaveAt}` : null,
  ].filter(Boolean);
  if (gates.length) out(`${gates.join(', ')}\n`);
  if (r.targets?.length) {
    out('\n');
    const head = [o.unit === 'host' ? 'HOST' : 'AGENT', 'WAVE', 'STATE', ...(o.extra ? [o.extra.header] : []), 'REASON'];
    out(
      table(
        head,
        r.targets.map((t, i) => [t.agentName, t.wave < 0 ? '-' : String(t.wave + 1), t.state, ...(o.extra ? [o.extra.cell(i)] : []), t.reason ?? '']),
      ),
    );
  }
}

/** A wave: a count (`5`) or a percentage (`10%`). */
function wave(w: string): number | string {
  if (/^\d+$/.test(w)) return Number(w);
  if (/^\d+(\.\d+)?%$/.test(w)) return w;
  throw new CliError(`a wave is a count or a percentage like 10%, got ${JSON.stringify(w)}`);
}

/** The command-line options of every run in waves. */
export const WAVE_OPTIONS = {
  waves: { type: 'string', multiple: true },
  'max-failures': { type: 'string' },
  soak: { type: 'string' },
  approval: { type: 'boolean' },
} as const;

/** `--waves`, `--max-failures`, `--soak SECONDS`, `--approval` into a request body. */
export function waveBody(values: CommandContext['values'], body: Record<string, unknown>): void {
  const waves = strs(values, 'waves', true);
  if (waves.length) body['waves'] = waves.map(wave);
  for (const [flag, key] of [
    ['max-failures', 'maxFailures'],
    ['soak', 'soakSeconds'],
  ] as const) {
    const v = str(values, flag);
    if (v === undefined) continue;
    if (!/^\d+$/.test(v)) throw new CliError(`--${flag} must be a count${flag === 'soak' ? ' of seconds' : ''}`);
    body[key] = Number(v);
  }
  if (values['approval']) body['approval'] = true;
}
