/**
 * A real systemd to run the installed agent under: a minimal Debian bookworm root booted with
 * systemd-nspawn. This machine (and CI) does not run systemd as PID 1, but a container does.
 *
 * - The root is made once with `debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus`
 *   (about 30–45 s, 240 MB) and cached as a tarball in MUSTER_TEST_CACHE_DIR
 *   (/var/cache/muster-test by default: it outlives CI's fresh clones on the same machine).
 * - Each boot unpacks the tarball into a temp dir and boots it with `--volatile=overlay` (writes go
 *   to a tmpfs), sharing the host's network: the agent inside reaches a server on 127.0.0.1.
 * - Commands run inside with `nsenter -t <container's PID 1> -a` and a clean environment.
 *
 * The container's cgroup tree gets no controllers (the host's are on cgroup v1), so memory, CPU
 * and task limits are accepted but not enforced: assert unit properties, not limits.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { sleep, tmpDir, waitFor } from './harness.js';

const run = promisify(execFile);

export const CACHE_DIR = process.env['MUSTER_TEST_CACHE_DIR'] ?? '/var/cache/muster-test';
export const ROOTFS_TAR = path.join(CACHE_DIR, 'bookworm-systemd.tar');
/** Where the test's share dir (packages, scripts) appears inside the container. */
export const SHARE = '/muster-test';

function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/**
 * Why the systemd suite cannot run here, or null when it can. In CI (CI=true) the suite is
 * mandatory: the caller turns a reason into a failure there, and into a loud skip elsewhere.
 */
export function systemdSuiteUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (systemd-nspawn, nsenter)';
  for (const c of ['systemd-nspawn', 'nsenter']) if (!which(c)) return `${c} is missing (apt-get install systemd-container util-linux)`;
  if (!fs.existsSync(ROOTFS_TAR) && !which('debootstrap')) return 'debootstrap is missing and no cached root exists (apt-get install debootstrap)';
  return null;
}

/** The Debian mirror apt uses here (deb822 `URIs:` or a classic `deb` line), for debootstrap. */
export function debianMirror(): string {
  const files: string[] = [];
  if (fs.existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  try {
    for (const f of fs.readdirSync('/etc/apt/sources.list.d').sort()) {
      if (f.endsWith('.sources') || f.endsWith('.list')) files.push(path.join('/etc/apt/sources.list.d', f));
    }
  } catch {
    /* none */
  }
  for (const f of files) {
    const text = fs.readFileSync(f, 'utf8');
    for (const line of text.split('\n')) {
      const m = /^\s*URIs:\s*(\S+)/.exec(line) ?? /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\b/.exec(line);
      if (m && /\/debian\/?$/.test(m[1]!)) return m[1]!;
    }
  }
  return 'http://deb.debian.org/debian';
}

/**
 * The cached root tarball, made now if missing. Concurrent callers (several test files, two CI
 * runs) serialise on a lock directory; the tarball appears by rename, complete or not at all.
 */
export async function ensureRootfs(log: (s: string) => void = () => {}): Promise<string> {
  if (fs.existsSync(ROOTFS_TAR)) return ROOTFS_TAR;
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const lock = `${ROOTFS_TAR}.lock`;
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch {
      if (fs.existsSync(ROOTFS_TAR)) return ROOTFS_TAR;
      // A lock older than 15 minutes belongs to a run that died.
      try {
        if (Date.now() - fs.statSync(lock).mtimeMs > 15 * 60_000) fs.rmSync(lock, { recursive: true, force: true });
      } catch {
        /* gone */
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      await sleep(1000);
    }
  }
  try {
    if (fs.existsSync(ROOTFS_TAR)) return ROOTFS_TAR;
    const work = fs.mkdtempSync(path.join(CACHE_DIR, 'build-'));
    try {
      const mirror = debianMirror();
      log(`systemd suite: building the bookworm root with debootstrap from ${mirror} (once; cached in ${ROOTFS_TAR})`);
      const dir = path.join(work, 'root');
      await run('debootstrap', ['--variant=minbase', '--include=systemd,systemd-sysv,dbus', 'bookworm', dir, mirror], { maxBuffer: 64 << 20 });
      // Nothing of apt's download cache is needed inside.
      fs.rmSync(path.join(dir, 'var/cache/apt/archives'), { recursive: true, force: true });
      fs.mkdirSync(path.join(dir, 'var/cache/apt/archives/partial'), { recursive: true });
      const tmp = path.join(work, 'root.tar');
      await run('tar', ['-C', dir, '--numeric-owner', '-cf', tmp, '.']);
      fs.renameSync(tmp, ROOTFS_TAR);
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
    return ROOTFS_TAR;
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A booted container. */
export class SystemdContainer {
  /** Host dir bind-mounted at SHARE inside. */
  readonly share: string;
  /** PID (host's view) of the container's systemd. */
  pid = 0;
  /** How long from spawning systemd-nspawn to `systemctl is-system-running` = running. */
  bootMs = 0;
  private proc: ChildProcess | null = null;
  private cgroups: string[] = [];
  private out = '';
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    readonly rootDir: string,
    share: string,
  ) {
    this.share = share;
  }

  output(): string {
    return this.out;
  }

  /** Unpacks the cached root and boots it; resolves once systemd says running (or degraded). */
  static async boot(): Promise<SystemdContainer> {
    const tar = await ensureRootfs((s) => console.warn(s));
    const base = tmpDir('nspawn');
    const root = path.join(base, 'root');
    const share = path.join(base, 'share');
    fs.mkdirSync(root);
    fs.mkdirSync(share);
    await run('tar', ['-C', root, '--numeric-owner', '-xf', tar]);
    const c = new SystemdContainer(root, share);
    await c.start();
    return c;
  }

  private async start(): Promise<void> {
    const node = fs.realpathSync(process.execPath);
    const machine = `muster-${path
      .basename(path.dirname(this.rootDir))
      .replace(/[^A-Za-z0-9]/g, '')
      .slice(-12)}`;
    // With --keep-unit and no systemd on the host, systemd-nspawn puts the container in
    // `payload` and `supervisor` cgroups beside its own: start it in a cgroup of its own, so two
    // containers never share one and stop() can remove the whole tree afterwards.
    this.cgroups = ownCgroups(machine);
    const t0 = Date.now();
    const p = spawn(
      '/bin/sh',
      [
        '-c',
        'for f in $MUSTER_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"',
        'sh',
        'systemd-nspawn',
        '-D',
        this.rootDir,
        '--boot',
        '--register=no',
        '--keep-unit',
        '--volatile=overlay',
        '--console=passive',
        `--machine=${machine}`,
        `--bind-ro=${node}:/usr/local/bin/node`,
        `--bind=${this.share}:${SHARE}`,
      ],
      {
        env: { ...process.env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: '1', MUSTER_CGROUP_PROCS: this.cgroups.map((d) => path.join(d, 'cgroup.procs')).join(' ') },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    this.proc = p;
    const onData = (d: Buffer) => {
      this.out += d.toString();
      if (this.out.length > 1e6) this.out = this.out.slice(-5e5);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    this.exited = new Promise((r) => p.once('exit', () => r()));
    // The container's PID 1 is systemd-nspawn's child.
    this.pid = await waitFor(
      () => {
        if (p.exitCode !== null) throw new Error(`systemd-nspawn exited ${p.exitCode}:\n${this.out}`);
        const kids = fs.readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
        return kids.find((k) => {
          try {
            return fs.readFileSync(`/proc/${k}/comm`, 'utf8').trim() === 'systemd';
          } catch {
            return false;
          }
        });
      },
      'the container systemd',
      30_000,
      20,
    );
    await waitFor(
      async () => {
        const r = await this.exec(['systemctl', 'is-system-running']);
        if (r.stdout.trim() === 'degraded') {
          const failed = await this.exec(['systemctl', '--failed', '--no-legend', '--plain']);
          console.warn(`systemd suite: container is degraded:\n${failed.stdout}`);
          return true;
        }
        return r.stdout.trim() === 'running';
      },
      'the container to reach running',
      60_000,
      20,
    );
    this.bootMs = Date.now() - t0;
  }

  /** Runs argv inside every namespace of the container, as root, with a clean environment. */
  async exec(argv: string[], opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<ExecResult> {
    const env = [
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'HOME=/root',
      'LANG=C.UTF-8',
      ...Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`),
    ];
    return new Promise((resolve) => {
      execFile(
        'nsenter',
        ['-t', String(this.pid), '-a', '--', '/usr/bin/env', '-i', ...env, ...argv],
        { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  /** exec that throws (with its output) unless it exits 0. */
  async sh(script: string, opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<string> {
    const r = await this.exec(['/bin/sh', '-c', script], opts);
    if (r.code !== 0) throw new Error(`in container: \`${script}\` exited ${r.code}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  }

  /** `systemctl show -p NAME --value UNIT`. */
  async prop(unit: string, name: string): Promise<string> {
    return (await this.sh(`systemctl show -p ${name} --value ${unit}`)).trim();
  }

  /** Copies a host file into the share dir; returns its path inside the container. */
  put(file: string, name = path.basename(file)): string {
    fs.copyFileSync(file, path.join(this.share, name));
    return `${SHARE}/${name}`;
  }

  /** Powers the container off (SIGTERM to systemd-nspawn does a clean poweroff); SIGKILL after 20 s. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill('SIGTERM');
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      // Killing a PID namespace's init kills everything in it.
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 20_000);
    await this.exited;
    clearTimeout(t);
    for (const d of this.cgroups) await waitFor(() => removeCgroupTree(d), `cgroup ${d} removed`, 10_000).catch((err: Error) => console.warn(err.message));
  }
}

/**
 * A new cgroup beside this process's own in the cgroup v2 and the name=systemd hierarchies
 * (the ones systemd-nspawn uses), or none where they cannot be written.
 */
function ownCgroups(name: string): string[] {
  const mounts = fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '));
  const mine = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const out: string[] = [];
  const v2 = mounts.find((m) => m[2] === 'cgroup2');
  const v2path = mine.find((l) => l.startsWith('0::'))?.slice(3);
  const named = mounts.find((m) => m[2] === 'cgroup' && (m[3] ?? '').split(',').includes('name=systemd'));
  const namedPath = mine.find((l) => /^\d+:name=systemd:/.test(l))?.replace(/^\d+:name=systemd:/, '');
  for (const [mnt, own] of [
    [v2?.[1], v2path],
    [named?.[1], namedPath],
  ] as const) {
    if (!mnt || own === undefined) continue;
    const dir = path.join(mnt, own, `muster-test-${name}`);
    try {
      fs.mkdirSync(dir);
      out.push(dir);
    } catch {
      /* not writable here: systemd-nspawn picks its own */
    }
  }
  return out;
}

/** rmdir of a cgroup and everything below it (children first); true once it is gone. */
function removeCgroupTree(dir: string): boolean {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return true;
  }
  for (const e of entries) if (e.isDirectory()) removeCgroupTree(path.join(dir, e.name));
  try {
    fs.rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}
