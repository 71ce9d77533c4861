/** asciicast v2 parsing (header line, then [time, kind, data] events). */
export interface CastHeader {
  version: number;
  width: number;
  height: number;
  timestamp?: number;
  title?: string;
}
export interface CastEvent {
  t: number;
  kind: string;
  data: string;
}

export function parseCast(text: string): { header: CastHeader; events: CastEvent[] } {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) throw new Error('empty recording');
  const header = JSON.parse(lines[0]!) as CastHeader;
  if (header.version !== 2) throw new Error(`unsupported asciicast version ${String(header.version)}`);
  const events: CastEvent[] = [];
  for (const l of lines.slice(1)) {
    try {
      const e = JSON.parse(l) as [number, string, string];
      if (Array.isArray(e) && typeof e[0] === 'number' && typeof e[2] === 'string') events.push({ t: e[0], kind: e[1], data: e[2] });
    } catch {
      // A truncated last line (size cap, crash) is skipped.
    }
  }
  return { header, events };
}
