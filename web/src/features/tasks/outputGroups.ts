/** Groups executions whose output is identical (so 990 identical answers read as one). */
export interface OutputGroup {
  key: string;
  text: string;
  ids: string[];
  exitCodes: Map<string, number>;
}

function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16);
}

/** Groups by exact output text; `outcome(id)` (exit code or state) is tallied per group. */
export function groupOutputs(items: Iterable<{ id: string; text: string; outcome: string }>): OutputGroup[] {
  const groups = new Map<string, OutputGroup>();
  for (const it of items) {
    const key = `${fnv1a(it.text)}:${it.text.length}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { key, text: it.text, ids: [], exitCodes: new Map() }));
    g.ids.push(it.id);
    g.exitCodes.set(it.outcome, (g.exitCodes.get(it.outcome) ?? 0) + 1);
  }
  return [...groups.values()].sort((a, b) => b.ids.length - a.ids.length);
}
