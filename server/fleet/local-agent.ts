import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { EnrollmentTokens } from '../auth/enrollment.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../log.js';

/**
 * Runs one agent on this machine next to the server (MUSTER_LOCAL_AGENT=1), restarting it when
 * it exits as systemd would, so a new user sees a live fleet at once.
 */
export class LocalAgentSupervisor {
  private child: ChildProcess | null = null;
  private stopped = false;
  private restarts = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: {
      agentScript: string;
      serverUrl: string;
      stateDir: string;
      log: Logger;
      /** An enrollment token, asked for only while the agent has no secret in its state dir. */
      token: () => Promise<string>;
    },
  ) {}

  /**
   * The server's local agent (MUSTER_LOCAL_AGENT, on by default), undefined when it is off or no
   * agent script was given: it connects over loopback to this node's own port (wss when the
   * listener speaks TLS), keeps its state in <data dir>/local-agent and enrolls with a token the
   * server mints for it.
   */
  static forServer(
    config: Pick<Config, 'localAgent' | 'tlsCert' | 'dataDir'>,
    d: { agentScript?: string | undefined; port: number; enrollment: Pick<EnrollmentTokens, 'mintLocal'>; log: Logger },
  ): LocalAgentSupervisor | undefined {
    if (!config.localAgent || !d.agentScript) return undefined;
    return new LocalAgentSupervisor({
      agentScript: d.agentScript,
      serverUrl: `${config.tlsCert ? 'wss' : 'ws'}://127.0.0.1:${d.port}`,
      token: () => d.enrollment.mintLocal(),
      stateDir: path.join(config.dataDir, 'local-agent'),
      log: d.log.child({ component: 'local-agent' }),
    });
  }

  start(): void {
    if (!fs.existsSync(this.opts.agentScript)) {
      this.opts.log.warn({ script: this.opts.agentScript }, 'local agent not built; skipping');
      return;
    }
    fs.mkdirSync(this.opts.stateDir, { recursive: true, mode: 0o700 });
    void this.spawn();
  }

  private async spawn(): Promise<void> {
    if (this.stopped) return;
    // The token goes in the environment (readable only by this user in /proc/<pid>/environ),
    // never on the command line, which every local user can read with `ps`.
    // The server's own settings (database URL with its password, admin password, enrollment token)
    // are none of the agent's business, nor of the scripts it runs: only MUSTER_AGENT_* pass.
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MUSTER_') || k.startsWith('MUSTER_AGENT_')) env[k] = v;
    delete env['MUSTER_AGENT_TOKEN'];
    if (!fs.existsSync(path.join(this.opts.stateDir, 'agent-secret'))) {
      try {
        env['MUSTER_AGENT_TOKEN'] = await this.opts.token();
      } catch (err) {
        this.opts.log.error({ err }, 'could not mint an enrollment token for the local agent');
      }
      if (this.stopped) return;
    }
    // detached: the agent leads a process group (and session) of its own, so nothing aimed at the
    // agent's group (a terminal's hangup, a job-control signal) can reach the server, and the
    // terminal's Ctrl-C reaches only the server, which stops the agent itself. The IPC channel
    // is the agent's lifeline: it exits when the channel closes, so a server that dies without
    // stopping it (SIGKILL) leaves no orphan agent behind.
    const child = spawn(
      process.execPath,
      [this.opts.agentScript, '--server', this.opts.serverUrl, '--state-dir', this.opts.stateDir, '--label', 'local=true', '--health-port=0'],
      { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true },
    );
    this.child = child;
    this.opts.log.info({ pid: child.pid, stateDir: path.resolve(this.opts.stateDir) }, 'local agent started');
    child.on('exit', (code, signal) => {
      this.child = null;
      if (this.stopped) return;
      this.restarts++;
      const delay = Math.min(30_000, 1000 * Math.min(this.restarts, 30));
      this.opts.log.warn({ code, signal, delay }, 'local agent exited; restarting');
      this.timer = setTimeout(() => void this.spawn(), delay);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        c.kill('SIGKILL');
        resolve();
      }, 5000);
      c.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      c.kill('SIGTERM');
    });
  }
}
