/**
 * Helpers for the agent package / install / self-update tests: build real packages with
 * deployment/build-agent.sh, install them with deployment/install-agent.sh --root, and run the
 * installed agent under a small supervisor that restarts it on exit as systemd's Restart=always
 * would, through the real launcher.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT, hermeticAgentEnv, sleep, tmpDir } from './harness.js';

export const run = promisify(execFile);

/** A signature of the right shape (64 bytes) that no key made: enough where nothing verifies it. */
export const FAKE_SIG = Buffer.alloc(64, 7).toString('base64');

/** A tiny tarball that looks like a package of `version` (the server checks ./VERSION); no agent in it. */
export function fakePackage(version: string): Uint8Array {
  const dir = tmpDir('fakepkg');
  fs.writeFileSync(path.join(dir, 'VERSION'), `${version}\n`);
  const file = path.join(tmpDir('fakeout'), `muster-agent-${version}-linux-x64.tar.gz`);
  execFileSync('tar', ['-czf', file, '-C', dir, './VERSION']);
  return new Uint8Array(fs.readFileSync(file));
}

const bigDirs = new Set<string>();
/**
 * A temp dir for packages and install roots (each holds a Node runtime, ~100 MB+): removed by
 * removeBigDirs() in afterAll, since a test worker may end without its exit hooks running.
 */
export function bigTmpDir(prefix: string): string {
  const d = tmpDir(prefix);
  bigDirs.add(d);
  return d;
}
/** Removes `dir` with the big dirs (a server data dir holding uploaded packages). */
export function trackBigDir(dir: string): void {
  bigDirs.add(dir);
}
export function removeBigDirs(): void {
  if (process.env['KEEP_TMP']) return;
  for (const d of bigDirs) fs.rmSync(d, { recursive: true, force: true });
  bigDirs.clear();
}
export const DEPLOY = path.join(ROOT, 'deployment');

/** Builds a package; returns its path. `broken` builds an agent that exits 1 at start. */
export async function buildPackage(version: string, outDir: string, broken = false): Promise<string> {
  const { stdout } = await run('bash', [path.join(DEPLOY, 'build-agent.sh'), '--version', version, '--out', outDir], {
    env: { ...process.env, MUSTER_AGENT_BROKEN: broken ? '1' : '0', MUSTER_PACKAGE_GZIP_LEVEL: '1' },
    maxBuffer: 16 << 20,
  });
  return stdout.trim().split('\n').pop()!;
}

/** Runs install-agent.sh into `root` (never starts systemd). */
export async function installAgent(root: string, args: string[]): Promise<string> {
  const { stdout } = await run('bash', [path.join(DEPLOY, 'install-agent.sh'), '--root', root, '--no-start', ...args], { maxBuffer: 16 << 20 });
  return stdout;
}

/** Every path under `dir` with its type, mode, symlink target or content hash (no times). */
export function snapshotTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const rel = path.relative(dir, p);
      const st = fs.lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) out[rel] = `link ${fs.readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[rel] = `dir ${mode}`;
        walk(p);
      } else out[rel] = `file ${mode} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`;
    }
  };
  walk(dir);
  return out;
}

export function installPaths(root: string) {
  const opt = path.join(root, 'opt', 'muster-agent');
  return {
    opt,
    current: path.join(opt, 'current'),
    releases: path.join(opt, 'releases'),
    launcher: path.join(opt, 'bin', 'muster-agent-launcher'),
    config: path.join(root, 'etc', 'muster-agent', 'agent.json'),
    state: path.join(root, 'var', 'lib', 'muster-agent'),
    unit: path.join(root, 'etc', 'systemd', 'system', 'muster-agent.service'),
  };
}

/** The release `current` points at (its directory name). */
export function currentRelease(root: string): string {
  return path.basename(fs.readlinkSync(installPaths(root).current));
}

/**
 * Restarts the installed agent (through the launcher) whenever it exits, like systemd with
 * Restart=always and a short RestartSec. Records every start and exit.
 */
export class Supervisor {
  proc: ChildProcess | null = null;
  starts = 0;
  exits: { code: number | null; signal: NodeJS.Signals | null }[] = [];
  private out = '';
  private stopped = false;
  private exited: Promise<void> = Promise.resolve();

  private readonly hermetic = hermeticAgentEnv();
  constructor(
    readonly root: string,
    private readonly env: Record<string, string> = {},
    private readonly restartMs = 200,
  ) {}

  output(): string {
    return this.out;
  }

  start(): this {
    if (this.stopped) return this;
    this.starts++;
    const p = spawn('sh', [installPaths(this.root).launcher], {
      env: {
        ...process.env,
        ...this.hermetic,
        MUSTER_AGENT_HEALTH_PORT: '-1',
        MUSTER_AGENT_BACKOFF_INITIAL_MS: '200',
        MUSTER_AGENT_BACKOFF_MAX_MS: '1000',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = p;
    const onData = (d: Buffer) => {
      this.out += d.toString();
      if (this.out.length > 4e6) this.out = this.out.slice(-2e6);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    this.exited = new Promise((resolve) =>
      p.once('exit', (code, signal) => {
        this.exits.push({ code, signal });
        this.proc = null;
        resolve();
        if (!this.stopped) setTimeout(() => this.start(), this.restartMs);
      }),
    );
    return this;
  }

  /** From now on, an exit is not followed by a restart (a host whose service manager gave up). */
  holdRestarts(): void {
    this.stopped = true;
  }

  /** Restarts again on exit, and starts the agent now if it is not running. */
  resumeRestarts(): void {
    this.stopped = false;
    if (!this.proc) this.start();
  }

  /** SIGKILLs the running agent (the supervisor restarts it). */
  kill(): void {
    this.proc?.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.proc?.kill('SIGTERM');
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}

const supervisors = new Set<Supervisor>();
/** A started supervisor that stopAllSupervisors() stops. */
export function supervise(root: string, env: Record<string, string> = {}): Supervisor {
  const s = new Supervisor(root, env).start();
  supervisors.add(s);
  return s;
}
export async function stopAllSupervisors(): Promise<void> {
  await Promise.all([...supervisors].map((s) => s.stop()));
  supervisors.clear();
  await sleep(10);
  removeBigDirs();
}

/** Makes a signing key pair with the real CLI; returns the key file paths. */
export async function keygen(dir: string): Promise<{ priv: string; pub: string }> {
  await run(process.execPath, [path.join(ROOT, 'dist', 'cli.js'), 'keygen', '--out', dir]);
  return { priv: path.join(dir, 'muster-update.key'), pub: path.join(dir, 'muster-update.pub') };
}

/** Signs a package with the real CLI (`muster sign`). */
export async function signPackage(key: string, file: string): Promise<string> {
  const { stdout } = await run(process.execPath, [path.join(ROOT, 'dist', 'cli.js'), 'sign', '--key', key, file]);
  return stdout.trim();
}

/** sha256 (hex) of a file. */
export function sha256File(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}
