import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * How one execution's process tree is held so that every process in it — including children that
 * left the process group with setsid — can be signalled:
 *  - `systemd`: a transient scope unit (systemd-run --scope), where systemd is PID 1;
 *  - `cgroup2` / `cgroup1`: a cgroup the agent creates itself (root; v1 uses pids or freezer);
 *  - `pgid`: only the process group (logged: setsid children can escape).
 * The child is moved into the cgroup by a tiny `sh` wrapper before it execs the interpreter, so
 * nothing it starts can be outside.
 *
 * Names identify the agent, so that a restarted agent finds what its previous run left (it was
 * killed, or crashed, while scripts ran) and only that: scopes are
 * `muster-exec-<agentId>-<executionId>.scope` in `muster-exec.slice`; cgroups are
 * `<root>/muster-exec/<agentId>/<executionId>`. A container is removed as soon as its execution
 * is over, and the agent's own cgroup directory with the last one.
 */
export interface Containment {
  readonly kind: 'systemd' | 'cgroup2' | 'cgroup1' | 'pgid';
  /** Description for exec.started (cgroup path, unit name or 'pgid'). */
  readonly describe: string;
  /** Wraps argv so the process enters the container before exec. */
  wrap(argv: string[]): string[];
  /** Pids currently in the container (empty for pgid). */
  pids(): number[];
  /** Signals every process in the container. */
  signal(sig: NodeJS.Signals): void;
  /** Removes the container if it is empty; true once it is gone. */
  dispose(): boolean;
}

interface Hierarchy {
  kind: 'cgroup2' | 'cgroup1';
  root: string;
  controller: string;
}

let detected: { systemd: boolean; hierarchy: Hierarchy | null; why: string } | undefined;

function canWrite(dir: string): boolean {
  const probe = path.join(dir, `muster-probe-${process.pid}`);
  try {
    fs.mkdirSync(probe);
    fs.rmdirSync(probe);
    return true;
  } catch {
    return false;
  }
}

/** Finds what this host offers, once. */
export function detectContainment(): { systemd: boolean; hierarchy: Hierarchy | null; why: string } {
  if (detected) return detected;
  let systemd = false;
  try {
    // Transient scopes of the system manager need root (an unprivileged agent would be refused
    // by polkit and every script would fail to start): such an agent uses the fallbacks.
    systemd = process.getuid?.() === 0 && fs.readFileSync('/proc/1/comm', 'utf8').trim() === 'systemd' && fs.existsSync('/run/systemd/system');
    if (systemd) execFileSync('systemd-run', ['--version'], { stdio: 'ignore' });
  } catch {
    systemd = false;
  }
  let hierarchy: Hierarchy | null = null;
  let why = 'no writable cgroup hierarchy';
  // Under systemd the cgroup tree is systemd's: the agent never creates directories in it.
  if (systemd) {
    detected = { systemd, hierarchy, why: 'systemd scopes' };
    return detected;
  }
  try {
    const mounts = fs
      .readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '));
    const v2 = mounts.find((m) => m[2] === 'cgroup2');
    if (v2 && canWrite(v2[1]!)) hierarchy = { kind: 'cgroup2', root: v2[1]!, controller: 'unified' };
    if (!hierarchy) {
      for (const ctl of ['freezer', 'pids']) {
        const m = mounts.find((x) => x[2] === 'cgroup' && (x[3] ?? '').split(',').includes(ctl));
        if (m && canWrite(m[1]!)) {
          hierarchy = { kind: 'cgroup1', root: m[1]!, controller: ctl };
          break;
        }
      }
    }
  } catch (err) {
    why = `cannot read mounts: ${(err as Error).message}`;
  }
  detected = { systemd, hierarchy, why };
  return detected;
}

function readPids(file: string): number[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function kill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

/** Agent and execution ids as they appear in cgroup and unit names. */
function safeName(id: string): string {
  return id.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);
}

/** The directory under which this agent keeps its executions' cgroups. */
function agentCgroupDir(h: Hierarchy, agentId: string): string {
  return path.join(h.root, 'muster-exec', safeName(agentId));
}

/** The slice holding every execution scope (operators may set limits on it). */
export const EXEC_SLICE = 'muster-exec.slice';

/** Prefix of this agent's execution scopes. */
export function scopePrefix(agentId: string): string {
  return `muster-exec-${safeName(agentId)}-`;
}

class CgroupContainment implements Containment {
  readonly kind: 'cgroup2' | 'cgroup1';
  readonly describe: string;
  constructor(
    private readonly h: Hierarchy,
    private readonly dir: string,
  ) {
    this.kind = h.kind;
    fs.mkdirSync(dir, { recursive: true });
    this.describe = `${h.kind}:${dir}`;
  }
  wrap(argv: string[]): string[] {
    // $1 is the cgroup.procs file; the rest is the real argv, exec'd unchanged (no interpolation).
    return ['/bin/sh', '-c', 'echo $$ > "$1" || exit 125; shift; exec "$@"', 'muster-exec', path.join(this.dir, 'cgroup.procs'), ...argv];
  }
  pids(): number[] {
    return readPids(path.join(this.dir, 'cgroup.procs'));
  }
  signal(sig: NodeJS.Signals): void {
    if (sig === 'SIGKILL') {
      if (this.h.kind === 'cgroup2' && fs.existsSync(path.join(this.dir, 'cgroup.kill'))) {
        try {
          fs.writeFileSync(path.join(this.dir, 'cgroup.kill'), '1');
          return;
        } catch {
          /* fall through to per-pid kill */
        }
      }
      if (this.h.controller === 'pids') {
        try {
          fs.writeFileSync(path.join(this.dir, 'pids.max'), '0'); // no more forks while we kill
        } catch {
          /* best effort */
        }
      }
      if (this.h.controller === 'freezer') {
        // Freeze, kill, thaw: a forking tree cannot outrun the kill.
        const state = path.join(this.dir, 'freezer.state');
        try {
          fs.writeFileSync(state, 'FROZEN');
          for (const p of this.pids()) kill(p, 'SIGKILL');
        } finally {
          try {
            fs.writeFileSync(state, 'THAWED');
          } catch {
            /* gone */
          }
        }
        return;
      }
    }
    for (const p of this.pids()) kill(p, sig);
  }
  dispose(): boolean {
    if (!removeCgroup(this.dir)) return false;
    // The agent's directory goes with its last execution (it is made again by the next one):
    // an agent id per test run or reinstall must not leave a directory behind for good.
    removeCgroup(path.dirname(this.dir));
    return true;
  }
}

/** rmdir of a cgroup; true once it is gone. Fails while the kernel still counts dying members. */
function removeCgroup(dir: string): boolean {
  try {
    fs.rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

class SystemdContainment implements Containment {
  readonly kind = 'systemd' as const;
  readonly describe: string;
  constructor(private readonly unit: string) {
    this.describe = `systemd:${unit}`;
  }
  wrap(argv: string[]): string[] {
    // --collect: the scope is unloaded (and its cgroup removed) when it ends, failed or not.
    return ['systemd-run', '--scope', '--quiet', '--collect', `--slice=${EXEC_SLICE}`, `--unit=${this.unit}`, '--', ...argv];
  }
  pids(): number[] {
    try {
      const cg = execFileSync('systemctl', ['show', '-p', 'ControlGroup', '--value', this.unit], { encoding: 'utf8' }).trim();
      if (!cg) return [];
      for (const root of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd']) {
        const f = path.join(root, cg, 'cgroup.procs');
        if (fs.existsSync(f)) return readPids(f);
      }
    } catch {
      /* unit gone */
    }
    return [];
  }
  signal(sig: NodeJS.Signals): void {
    try {
      execFileSync('systemctl', ['kill', `--signal=${sig}`, this.unit], { stdio: 'ignore' });
    } catch {
      /* unit gone */
    }
  }
  dispose(): boolean {
    // systemd removes the scope (--collect) once its last process is gone.
    return !this.loaded();
  }
  loaded(): boolean {
    try {
      return execFileSync('systemctl', ['show', '-p', 'LoadState', '--value', this.unit], { encoding: 'utf8' }).trim() === 'loaded';
    } catch {
      return false;
    }
  }
}

class PgidContainment implements Containment {
  readonly kind = 'pgid' as const;
  readonly describe = 'pgid';
  wrap(argv: string[]): string[] {
    return argv;
  }
  pids(): number[] {
    return [];
  }
  signal(): void {}
  dispose(): boolean {
    return true;
  }
}

/** Creates the container for one execution (the process group is always signalled as well). */
export function createContainment(agentId: string, executionId: string, onFallback: (why: string) => void): Containment {
  const d = detectContainment();
  const safeId = safeName(executionId);
  if (d.systemd) return new SystemdContainment(`${scopePrefix(agentId)}${safeId}.scope`);
  if (d.hierarchy) {
    try {
      return new CgroupContainment(d.hierarchy, path.join(agentCgroupDir(d.hierarchy, agentId), safeId));
    } catch (err) {
      onFallback(`cannot create cgroup: ${(err as Error).message}`);
      return new PgidContainment();
    }
  }
  onFallback(d.why);
  return new PgidContainment();
}

/**
 * Kills processes left in this agent's execution scopes or cgroups by a previous run of the agent
 * (it was killed or crashed while scripts ran; under systemd they live outside the agent's unit,
 * so no restart of the unit touches them) and removes those scopes and cgroups. Called at start,
 * before any execution of this run exists. Returns how many processes were killed.
 */
export function sweepOrphans(agentId: string, log?: (o: object, msg: string) => void): number {
  const d = detectContainment();
  if (d.systemd) return sweepScopes(agentId, log);
  if (!d.hierarchy) return 0;
  const dir = agentCgroupDir(d.hierarchy, agentId);
  let entries: string[] = [];
  try {
    entries = fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return 0;
  }
  let killed = 0;
  const left: CgroupContainment[] = [];
  for (const name of entries) {
    const c = new CgroupContainment(d.hierarchy, path.join(dir, name));
    const pids = c.pids();
    killed += pids.length;
    if (pids.length) c.signal('SIGKILL');
    left.push(c);
  }
  // A killed process leaves its cgroup a moment later: wait (bounded) so the directories go now.
  waitUntil(() => left.every((c) => c.dispose()), 3000);
  removeCgroup(dir);
  return killed;
}

/** Loaded scope units whose names match `pattern` (a systemctl glob). */
function listScopes(pattern: string): string[] {
  try {
    const out = execFileSync('systemctl', ['list-units', '--type=scope', '--all', '--plain', '--no-legend', '--full', pattern], { encoding: 'utf8' });
    return out
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0] ?? '')
      .filter((u) => u.endsWith('.scope'));
  } catch {
    return [];
  }
}

function sweepScopes(agentId: string, log?: (o: object, msg: string) => void): number {
  const units = listScopes(`${scopePrefix(agentId)}*.scope`);
  if (!units.length) return 0;
  let killed = 0;
  for (const u of units) killed += new SystemdContainment(u).pids().length;
  // SIGKILL first: `systemctl stop` alone sends SIGTERM and may wait 90 s for a script that ignores it.
  try {
    execFileSync('systemctl', ['kill', '--signal=SIGKILL', ...units], { stdio: 'ignore' });
  } catch {
    /* some already gone */
  }
  waitUntil(() => listScopes(`${scopePrefix(agentId)}*.scope`).length === 0, 3000);
  const still = listScopes(`${scopePrefix(agentId)}*.scope`);
  if (still.length) {
    try {
      execFileSync('systemctl', ['stop', ...still], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* reported below */
    }
  }
  log?.({ scopes: units, killed }, 'stopped execution scopes left by a previous agent run');
  return killed;
}

/** Polls `done` (synchronously: this runs at start, before anything else) for up to `ms`. */
function waitUntil(done: () => boolean, ms: number): boolean {
  const deadline = Date.now() + ms;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    if (done()) return true;
    if (Date.now() > deadline) return false;
    Atomics.wait(pause, 0, 0, 50);
  }
}
