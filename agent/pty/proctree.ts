import fs from 'node:fs';

/** A process as /proc/<pid>/stat describes it. */
interface ProcStat {
  pid: number;
  ppid: number;
  pgrp: number;
  session: number;
  start: string;
}

function readStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm (field 2) may hold spaces and parentheses: parse after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] state, f[1] ppid, f[2] pgrp, f[3] session, ..., f[19] starttime
  if (f[0] === 'Z') return null;
  return { pid, ppid: Number(f[1]), pgrp: Number(f[2]), session: Number(f[3]), start: f[19] ?? '' };
}

function allProcs(): ProcStat[] {
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  const out: ProcStat[] = [];
  for (const n of names) {
    const pid = Number(n);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    const s = readStat(pid);
    if (s) out.push(s);
  }
  return out;
}

/**
 * Every live process that belongs to the terminal whose shell (session leader) is `leader`:
 * members of its session (jobs in their own process groups included) and descendants of the
 * shell that left the session (setsid) but not the tree.
 */
export function terminalProcesses(leader: number, includeLeader = true): Map<number, string> {
  const procs = allProcs();
  const children = new Map<number, ProcStat[]>();
  for (const p of procs) {
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const found = new Map<number, string>();
  for (const p of procs) {
    if (p.pid === leader ? includeLeader : p.session === leader) found.set(p.pid, p.start);
  }
  const stack = [...found.keys()];
  while (stack.length) {
    const pid = stack.pop()!;
    for (const c of children.get(pid) ?? []) {
      if (!found.has(c.pid)) {
        found.set(c.pid, c.start);
        stack.push(c.pid);
      }
    }
  }
  return found;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone already */
  }
}

let ownGroup: number | undefined;
/** The agent's own process group (read once; a process cannot leave it without setsid, which the agent never calls). */
function agentGroup(): number {
  ownGroup ??= readStat(process.pid)?.pgrp ?? process.pid;
  return ownGroup;
}

/**
 * The process group of `pid` if it is safe to hang up as a whole for the terminal led by
 * `leader`, else null. node-pty returns before its child has called setsid(): until then the
 * child (and so the leader pid) is still in the agent's process group, in the agent's session.
 * A group is the terminal's own only when it lies inside the terminal's session (session id ==
 * the shell's pid, which setsid made it), or when it is the own session of a descendant that left
 * it (pgid == sid == pid). Never the agent's own group, whatever /proc said. Re-read right before
 * each kill so a stale listing cannot widen the target.
 */
function ownedGroup(pid: number, leader: number): number | null {
  const s = readStat(pid);
  if (!s || s.pgrp <= 1 || s.pgrp === agentGroup()) return null;
  if (s.session === leader) return s.pgrp;
  if (s.pgrp === s.pid && s.session === s.pid) return s.pgrp;
  return null;
}

/**
 * Ends a terminal's whole process tree: SIGHUP to every process group of the terminal and to
 * every process (what a hangup does), then SIGKILL to whatever still runs after `graceMs`. A
 * process not yet in a group of its own (the shell before its setsid) is signalled by pid only.
 * Pids are re-checked by start time before the SIGKILL so a reused pid is never hit. Resolves
 * when the second pass ran.
 */
export async function killTerminalTree(leader: number, graceMs = 1000): Promise<void> {
  const first = terminalProcesses(leader);
  const hungUp = new Set<number>();
  for (const pid of first.keys()) {
    const g = ownedGroup(pid, leader);
    if (g === null || hungUp.has(g)) continue;
    hungUp.add(g);
    signal(-g, 'SIGHUP');
  }
  for (const pid of first.keys()) signal(pid, 'SIGHUP');
  for (const pid of first.keys()) signal(pid, 'SIGCONT'); // a stopped job must wake to see the hangup
  await new Promise((r) => setTimeout(r, graceMs).unref());
  // Second pass: the first pass's processes (same start time), plus anything the session forked since.
  const again = terminalProcesses(leader, false);
  for (const [pid, start] of first) again.set(pid, start);
  for (const [pid, start] of again) {
    const s = readStat(pid);
    if (s && s.start === start) signal(pid, 'SIGKILL');
  }
}
