/** Renders rows as left-aligned columns under a header; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return `${[header, ...rows].map(line).join('\n')}\n`;
}

/** `k=v,k2=v2`, sorted by key. */
export function labelsText(labels: Record<string, string> | null | undefined): string {
  return Object.entries(labels ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

/** Prefixes every line of `text` (a final newline is supplied when missing). */
export function prefixLines(prefix: string, text: string): string {
  if (!text) return '';
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  return `${body
    .split('\n')
    .map((l) => `${prefix}${l}`)
    .join('\n')}\n`;
}

/** `3 succeeded, 1 failed` from per-state counts. */
export function countsText(t: { counts: Partial<Record<string, number>> }): string {
  return (
    Object.entries(t.counts)
      .map(([k, v]) => `${v} ${k}`)
      .join(', ') || '0'
  );
}

/** An execution's result in a few words: `failed (exit 3, 0.2s)`. */
export function execSummary(e: {
  status: string;
  exitCode: number | null;
  signal: string | null;
  durationMs: number | null;
  reason: string | null;
  truncated: boolean;
}): string {
  const bits = [
    e.exitCode !== null ? `exit ${e.exitCode}` : null,
    e.signal ? `signal ${e.signal}` : null,
    e.durationMs !== null ? `${(e.durationMs / 1000).toFixed(1)}s` : null,
    e.reason,
    e.truncated ? 'output truncated' : null,
  ].filter(Boolean);
  return `${e.status}${bits.length ? ` (${bits.join(', ')})` : ''}`;
}

const HOST_COLOURS = [36, 33, 35, 32, 34, 96, 93, 95, 92, 94];

/** ANSI colours for a terminal: one per host (stable for the run), red/green for results; plain text when off. */
export class Palette {
  private readonly hosts = new Map<string, number>();
  constructor(readonly on: boolean) {}

  private wrap(code: number | string, s: string): string {
    return this.on ? `\x1b[${code}m${s}\x1b[0m` : s;
  }

  /** `text` in `name`'s colour (hosts get colours in the order first seen). */
  host(name: string, text: string): string {
    let i = this.hosts.get(name);
    if (i === undefined) this.hosts.set(name, (i = this.hosts.size));
    return this.wrap(HOST_COLOURS[i % HOST_COLOURS.length]!, text);
  }

  err(s: string): string {
    return this.wrap('1;31', s);
  }

  status(status: string, text: string): string {
    return status === 'succeeded' ? this.wrap(32, text) : status === 'running' || status === 'skipped' ? this.wrap(33, text) : this.wrap(31, text);
  }
}
