import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
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

  constructor(private readonly opts: { agentScript: string; serverUrl: string; token: string; stateDir: string; log: Logger }) {}

  start(): void {
    if (!fs.existsSync(this.opts.agentScript)) {
      this.opts.log.warn({ script: this.opts.agentScript }, 'local agent not built; skipping');
      return;
    }
    fs.mkdirSync(this.opts.stateDir, { recursive: true, mode: 0o700 });
    this.spawn();
  }

  private spawn(): void {
    const child = spawn(process.execPath, [this.opts.agentScript, '--server', this.opts.serverUrl, '--token', this.opts.token,
      '--state-dir', this.opts.stateDir, '--label', 'local=true', '--health-port=0'], { stdio: ['ignore', 'inherit', 'inherit'] });
    this.child = child;
    this.opts.log.info({ pid: child.pid, stateDir: path.resolve(this.opts.stateDir) }, 'local agent started');
    child.on('exit', (code, signal) => {
      this.child = null;
      if (this.stopped) return;
      this.restarts++;
      const delay = Math.min(30_000, 1000 * Math.min(this.restarts, 30));
      this.opts.log.warn({ code, signal, delay }, 'local agent exited; restarting');
      this.timer = setTimeout(() => this.spawn(), delay);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const c = this.child;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { c.kill('SIGKILL'); resolve(); }, 5000);
      c.once('exit', () => { clearTimeout(t); resolve(); });
      c.kill('SIGTERM');
    });
  }
}
