import fs from 'node:fs';
import path from 'node:path';
import { writeAtomic } from '../state.js';

/**
 * The update marker in the state dir, shared with deployment/launcher.sh (plain key=value lines
 * so the shell launcher can read it): written before `current` is swapped, turned into
 * `rolled_back` by the launcher, removed by the agent once it has reported the outcome.
 */
export interface UpdateMarker {
  rolloutId: string;
  fromVersion: string;
  toVersion: string;
  status: 'pending' | 'rolled_back';
  reason?: string;
}

export const MARKER_FILE = 'update-marker';
export const ATTEMPTS_FILE = 'update-attempts';

const KEYS: Record<string, keyof UpdateMarker> = {
  rollout_id: 'rolloutId',
  from_version: 'fromVersion',
  to_version: 'toVersion',
  status: 'status',
  reason: 'reason',
};

/** Reads the marker; null when absent or unreadable (a torn marker is treated as none). */
export function readMarker(stateDir: string): UpdateMarker | null {
  let text: string;
  try {
    text = fs.readFileSync(path.join(stateDir, MARKER_FILE), 'utf8');
  } catch {
    return null;
  }
  const m: Partial<Record<keyof UpdateMarker, string>> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i <= 0) continue;
    const key = KEYS[line.slice(0, i)];
    if (key && m[key] === undefined) m[key] = line.slice(i + 1);
  }
  if (!m.rolloutId || !m.fromVersion || !m.toVersion || (m.status !== 'pending' && m.status !== 'rolled_back')) return null;
  return { rolloutId: m.rolloutId, fromVersion: m.fromVersion, toVersion: m.toVersion, status: m.status, ...(m.reason ? { reason: m.reason } : {}) };
}

/** Writes the marker atomically (temp file + fsync + rename). Values must not contain newlines. */
export function writeMarker(stateDir: string, m: UpdateMarker): void {
  const clean = (v: string) => v.replace(/[\r\n]/g, ' ');
  const lines = [`rollout_id=${clean(m.rolloutId)}`, `from_version=${clean(m.fromVersion)}`, `to_version=${clean(m.toVersion)}`, `status=${m.status}`];
  if (m.reason) lines.push(`reason=${clean(m.reason)}`);
  fs.rmSync(path.join(stateDir, ATTEMPTS_FILE), { force: true });
  writeAtomic(path.join(stateDir, MARKER_FILE), `${lines.join('\n')}\n`, 0o600);
}

/** Removes the marker and the launcher's start counter. */
export function clearMarker(stateDir: string): void {
  fs.rmSync(path.join(stateDir, ATTEMPTS_FILE), { force: true });
  fs.rmSync(path.join(stateDir, MARKER_FILE), { force: true });
}
