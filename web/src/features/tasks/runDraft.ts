/**
 * The run form's defaults and checks that are logic, not layout: the starting script of each
 * interpreter, when a script is still "the default" (so changing the interpreter may replace it),
 * the #! line that contradicts the chosen interpreter, and the count-or-percentage limits.
 */

/** What the editor starts with for each interpreter: a harmless script that runs as written. */
export const DEFAULT_SCRIPTS: Readonly<Record<string, string>> = {
  bash: 'hostname\nuptime\n',
  sh: 'hostname\nuptime\n',
  python3: 'import os, platform\nprint(platform.node(), os.getloadavg())\n',
  node: "const os = require('os');\nconsole.log(os.hostname(), os.loadavg());\n",
  shebang: '#!/bin/sh\nhostname\nuptime\n',
};

/** Whether `script` is empty or one of the defaults (replacing it loses nothing the user wrote). */
export function isDefaultScript(script: string): boolean {
  const s = script.trim();
  return s === '' || Object.values(DEFAULT_SCRIPTS).some((d) => d.trim() === s);
}

/** A warning when the script's #! line names another language than the chosen interpreter (which ignores the #! line). */
export function shebangMismatch(script: string, interpreter: string): string | null {
  if (interpreter === 'shebang' || !script.startsWith('#!')) return null;
  const line = script.slice(2, script.indexOf('\n') === -1 ? undefined : script.indexOf('\n')).trim();
  const prog = (line.split(/\s+/)[0]?.split('/').pop() === 'env' ? line.split(/\s+/)[1] : line.split(/\s+/)[0]?.split('/').pop()) ?? '';
  const family = (p: string) => (/^python/.test(p) ? 'python' : /^(node|nodejs)$/.test(p) ? 'node' : /^(ba|da|z|k)?sh$/.test(p) ? 'shell' : p);
  if (!prog || family(prog) === family(interpreter)) return null;
  return `the #! line names ${prog}, but the script runs with ${interpreter} (choose "shebang" to use the #! line)`;
}

/** Parses a concurrency / max-failures field: '' → null, "10" → 10, "25%" → "25%"; throws on anything else. */
export function parseLimit(text: string, what: string): number | string | null {
  const t = text.trim();
  if (t === '') return null;
  if (/^\d+$/.test(t)) return Number(t);
  if (/^\d+(\.\d+)?%$/.test(t)) return t;
  throw new Error(`${what} must be a count like 10 or a percentage like 25%`);
}
