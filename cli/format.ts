/** Renders rows as left-aligned columns under a header; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return `${[header, ...rows].map(line).join('\n')}\n`;
}

/** `k=v,k2=v2`, sorted by key. */
export function labelsText(labels: Record<string, string> | null | undefined): string {
  return Object.entries(labels ?? {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(',');
}

/** Prefixes every line of `text` (a final newline is supplied when missing). */
export function prefixLines(prefix: string, text: string): string {
  if (!text) return '';
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  return `${body.split('\n').map((l) => `${prefix}${l}`).join('\n')}\n`;
}
