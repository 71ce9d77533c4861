import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { compareVersions, type ServerMessage, type UpdateState } from '../../protocol/index.js';
import type { AgentCapability, AgentContext } from '../capability.js';
import { AGENT_VERSION } from '../version.js';
import { download } from './download.js';
import { clearMarker, readMarker, writeMarker } from './marker.js';
import { parsePublicKey, verifyPackageSignature } from './verify.js';

const run = promisify(execFile);

class UpdateFailure extends Error {}

/**
 * Self-update (issue 4). On `update`: download with the agent's own credentials, verify size,
 * sha256 and the ed25519 signature, refuse older versions unless allowed, unpack into
 * releases/<version>, self-test `bin/muster-agent --version`, write the marker, swap `current`
 * atomically, report, and exit so the supervisor starts the new version through the launcher.
 * Invariant: nothing under the install root changes before verification has passed; `current`
 * always points at a complete release that passed its self-test.
 * After a restart, the outcome recorded in the marker (succeeded, rolled_back, interrupted) is
 * reported once the server has welcomed this process, and only then is the marker removed.
 */
export function createUpdater(ctx: AgentContext, hooks: { runningExecutions(): number } = { runningExecutions: () => 0 }): AgentCapability<'update'> {
  const { cfg, log } = ctx;
  let busy: string | null = null;
  let confirmTimer: NodeJS.Timeout | undefined;

  const report = (rolloutId: string, version: string, state: UpdateState, reason?: string) => {
    log.info({ rolloutId, version, state, ...(reason ? { reason } : {}) }, 'update status');
    ctx.link.send({ type: 'update.status', rolloutId, version, state, ...(reason ? { reason: reason.slice(0, 2048) } : {}) });
  };

  // A new version on probation: if the server never welcomes it, exit non-zero so the launcher
  // counts the failed start and eventually rolls back.
  const startMarker = readMarker(cfg.stateDir);
  if (startMarker?.status === 'pending' && startMarker.toVersion === AGENT_VERSION) {
    confirmTimer = setTimeout(() => {
      log.error({ version: AGENT_VERSION, afterSec: cfg.updateConfirmSec }, 'new version was not welcomed by the server in time; exiting for the launcher');
      void ctx.exit('update not confirmed', 1);
    }, cfg.updateConfirmSec * 1000);
  }

  const crashAt = (step: NonNullable<typeof cfg.updateCrashAt>) => {
    if (cfg.updateCrashAt === step) {
      log.warn({ step }, 'fault injection: killing myself');
      process.kill(process.pid, 'SIGKILL');
    }
  };

  async function apply(m: ServerMessage<'update'>): Promise<void> {
    const installRoot = cfg.installRoot;
    if (!installRoot) throw new UpdateFailure('not running from an installed layout (no install root)');
    const releases = path.join(installRoot, 'releases');
    if (!fs.existsSync(path.join(releases, AGENT_VERSION, 'bin', 'muster-agent'))) {
      throw new UpdateFailure(`running release ${AGENT_VERSION} not found under ${releases}; cannot keep it for rollback`);
    }
    if (!/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$/.test(m.version)) throw new UpdateFailure(`invalid version ${JSON.stringify(m.version)}`);
    if (compareVersions(m.version, AGENT_VERSION) < 0 && !m.allowDowngrade) {
      throw new UpdateFailure(`refusing downgrade from ${AGENT_VERSION} to ${m.version} (the rollout does not allow downgrades)`);
    }
    if (!cfg.updatePublicKey) throw new UpdateFailure('no updatePublicKey configured; refusing unsigned updates');
    const key = parsePublicKey(cfg.updatePublicKey);

    // The server's own URL when the package lives there (relative URL); credentials go to that origin only.
    const base = new URL(ctx.serverUrl().replace(/^ws/, 'http'));
    const url = new URL(m.url, base);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UpdateFailure(`unsupported download URL scheme ${url.protocol}`);
    const headers: Record<string, string> = { 'User-Agent': `muster-agent/${AGENT_VERSION}` };
    const secret = ctx.state.getSecret();
    if (url.origin === base.origin && secret) {
      headers['Authorization'] = `Bearer ${secret}`;
      headers['X-Muster-Agent-Id'] = ctx.state.agentId;
    }

    // Leftovers of an update killed while downloading or unpacking (never a release: those are
    // renamed into place whole). The download lives under the install root, which belongs to
    // this agent alone, so leftovers can be found and removed here.
    for (const n of fs.readdirSync(releases)) if (n.startsWith('.tmp-')) fs.rmSync(path.join(releases, n), { recursive: true, force: true });
    for (const n of fs.readdirSync(installRoot)) if (n.startsWith('.download-')) fs.rmSync(path.join(installRoot, n), { recursive: true, force: true });
    const work = fs.mkdtempSync(path.join(installRoot, '.download-'));
    try {
      report(m.rolloutId, m.version, 'downloading');
      const file = path.join(work, 'package.tar.gz');
      let crashed = false;
      const got = await download(file, {
        url,
        headers,
        maxBytes: m.size,
        timeoutMs: 120_000,
        ...(cfg.caFile ? { ca: fs.readFileSync(cfg.caFile) } : {}),
        onProgress: () => {
          if (!crashed) {
            crashed = true;
            crashAt('downloading');
          }
        },
      }).catch((err: Error) => {
        throw new UpdateFailure(err.message);
      });

      report(m.rolloutId, m.version, 'verifying');
      crashAt('verifying');
      if (got.size !== m.size) throw new UpdateFailure(`size mismatch: got ${got.size} bytes, expected ${m.size}`);
      if (got.sha256 !== m.sha256) throw new UpdateFailure(`sha256 mismatch: got ${got.sha256}, expected ${m.sha256}`);
      if (!verifyPackageSignature(key, got.sha256, m.signature)) throw new UpdateFailure('signature does not verify against the configured update public key');

      report(m.rolloutId, m.version, 'installing');
      const target = path.join(releases, m.version);
      const staging = path.join(releases, `.tmp-${m.version}-${process.pid}`);
      fs.rmSync(staging, { recursive: true, force: true });
      fs.mkdirSync(staging, { recursive: true, mode: 0o755 });
      try {
        await run('tar', ['-xzf', file, '-C', staging, '--no-same-owner'], { timeout: 300_000 }).catch((err: Error) => {
          throw new UpdateFailure(`cannot unpack the package: ${err.message}`);
        });
        const pkgVersion = fs.existsSync(path.join(staging, 'VERSION')) ? fs.readFileSync(path.join(staging, 'VERSION'), 'utf8').trim() : '';
        if (pkgVersion !== m.version) throw new UpdateFailure(`package says version ${JSON.stringify(pkgVersion)}, rollout says ${m.version}`);
        const selfTest = await run(path.join(staging, 'bin', 'muster-agent'), ['--version'], { timeout: 60_000 }).catch((err: Error) => {
          throw new UpdateFailure(`self-test failed: ${err.message}`);
        });
        if (selfTest.stdout.trim() !== m.version) throw new UpdateFailure(`self-test printed ${JSON.stringify(selfTest.stdout.trim())}, wanted ${m.version}`);
        crashAt('installing');
        fs.rmSync(target, { recursive: true, force: true });
        fs.renameSync(staging, target);
      } finally {
        fs.rmSync(staging, { recursive: true, force: true });
      }

      // Running scripts end when the agent stops: give them time to finish before the switch.
      const drainUntil = Date.now() + cfg.updateDrainSec * 1000;
      if (hooks.runningExecutions() > 0)
        log.info({ running: hooks.runningExecutions(), maxWaitSec: cfg.updateDrainSec }, 'waiting for running executions before restarting');
      while (hooks.runningExecutions() > 0 && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 250));

      report(m.rolloutId, m.version, 'restarting');
      writeMarker(cfg.stateDir, { rolloutId: m.rolloutId, fromVersion: AGENT_VERSION, toVersion: m.version, status: 'pending' });
      crashAt('marker');
      swapCurrent(installRoot, m.version);
      crashAt('swapped');
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
    log.info({ from: AGENT_VERSION, to: m.version }, 'update installed; restarting into the new version');
    await ctx.exit(`updating to ${m.version}`, 0);
  }

  /** Reports the outcome an earlier process left in the marker; runs after every welcome. */
  function reportMarker(): void {
    const mk = readMarker(cfg.stateDir);
    if (!mk) return;
    if (mk.status === 'rolled_back') {
      report(mk.rolloutId, mk.toVersion, 'rolled_back', mk.reason ?? `version ${mk.toVersion} did not start; back on ${AGENT_VERSION}`);
    } else if (mk.toVersion === AGENT_VERSION) {
      clearTimeout(confirmTimer);
      report(mk.rolloutId, mk.toVersion, 'succeeded');
      pruneReleases(mk.fromVersion);
    } else if (mk.fromVersion === AGENT_VERSION) {
      report(mk.rolloutId, mk.toVersion, 'failed', `the update was interrupted before the switch; still on ${AGENT_VERSION}`);
    } else {
      log.warn({ marker: mk, version: AGENT_VERSION }, 'stale update marker; removing it');
    }
    clearMarker(cfg.stateDir);
  }

  /** Keeps the running release and the one it came from; removes older ones and leftovers. */
  function pruneReleases(previous: string): void {
    if (!cfg.installRoot) return;
    const releases = path.join(cfg.installRoot, 'releases');
    let names: string[];
    try {
      names = fs.readdirSync(releases);
    } catch {
      return;
    }
    for (const n of names) {
      if (n === AGENT_VERSION || n === previous) continue;
      fs.rmSync(path.join(releases, n), { recursive: true, force: true });
    }
  }

  return {
    handlers: {
      update: (m) => {
        if (busy) {
          if (busy !== m.rolloutId) report(m.rolloutId, m.version, 'failed', `another update (rollout ${busy}) is in progress`);
          return;
        }
        if (m.version === AGENT_VERSION) {
          report(m.rolloutId, m.version, 'succeeded');
          return;
        }
        busy = m.rolloutId;
        apply(m).catch((err: unknown) => {
          busy = null;
          const reason = err instanceof Error ? err.message : String(err);
          if (!(err instanceof UpdateFailure)) log.error({ err }, 'update failed unexpectedly');
          report(m.rolloutId, m.version, 'failed', reason);
        });
      },
    },
    onWelcome: () => {
      if (busy) return; // this process is mid-update: its own marker is not an outcome yet
      try {
        reportMarker();
      } catch (err) {
        log.error({ err }, 'cannot report the update marker');
      }
    },
    stop: async () => {
      clearTimeout(confirmTimer);
    },
  };
}

/** Points `current` at releases/<version> in one rename(2): never missing, never half-written. */
export function swapCurrent(installRoot: string, version: string): void {
  const tmp = path.join(installRoot, `.current.tmp.${process.pid}`);
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(path.join('releases', version), tmp);
  fs.renameSync(tmp, path.join(installRoot, 'current'));
}
