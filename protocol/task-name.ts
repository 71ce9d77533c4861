/**
 * A task's default name: the script's first meaningful line. Blank lines, the #! line, shell
 * option lines (`set -eu`) and `'use strict'` are skipped; a leading comment counts, without its
 * marker, since it usually says what the script does.
 */
export const TASK_NAME_MAX = 200;

/** The name a task gets when none is given. */
export function defaultTaskName(script: string): string {
  for (const raw of script.split('\n')) {
    let line = raw.trim();
    if (line === '' || line.startsWith('#!')) continue;
    if (/^set\s+[-+][a-zA-Z]+(\s+\S+)*$/.test(line) || /^['"]use strict['"];?$/.test(line)) continue;
    const comment = /^(#+|\/\/+|--)\s*(.*)$/.exec(line);
    if (comment) {
      line = comment[2]!.trim();
      if (line === '' || /^[-=#*/ ]+$/.test(line)) continue;
    }
    return line.length > TASK_NAME_MAX ? `${line.slice(0, TASK_NAME_MAX - 1)}…` : line;
  }
  return 'empty script';
}
