import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { encodeExecOutput, type ServerMessage, type Stream } from '../../protocol/index.js';
import type { Link } from '../capability.js';
import type { AgentLog } from '../log.js';
import { DEFAULT_PATH, isDir, resolveUser, switchUserArgv, utf8Locale } from '../pty/login.js';
import { createContainment, type Containment } from './containment.js';
import type { SavedResult } from './results.js';

/** Tunables of one execution (runLimits in index.ts: from the agent config). */
export interface RunLimits {
  /** Coalescing: a chunk is sent after this many ms or at `chunkBytes`, whichever comes first. */
  coalesceMs: number;
  chunkBytes: number;
  /** Output kept per execution for resends; while disconnected, output past it is cut (truncated). */
  bufferBytes: number;
  /** SIGTERM → SIGKILL grace on timeout/cancel. */
  killGraceMs: number;
  /** Socket backlog above which the child's pipes are paused, and below which they resume. */
  highWaterBytes: number;
  lowWaterBytes: number;
  /** After the main process exits, how long its pipes may stay open (held by leftovers) before the tree is killed. */
  drainMs: number;
}

type Status = 'succeeded' | 'failed' | 'timeout' | 'cancelled';
interface Chunk {
  seq: number;
  stream: Stream;
  data: Buffer;
}

/**
 * One execution on this host: a private script file, the interpreter with the arguments as
 * separate argv entries, its own process group and container; output coalesced into sequenced
 * chunks kept (bounded) until the server acks the result, so they can be resent after a
 * reconnect. Owns its child, timers and temp dir and releases them exactly once.
 */
export class Run {
  /** Next output sequence number. */
  seq = 0;
  /** Next sequence number to send on the current connection. */
  private sentSeq = 0;
  private chunks: Chunk[] = [];
  private bufBytes = 0;
  truncated = false;
  /** Whether output may be streamed now (connected and, after a reconnect, resumed by the server). */
  live: boolean;
  finished: null | { status: Status; exitCode: number | null; signal: string | null; finishedAt: number; error?: string; reason?: string } = null;
  startedAt = Date.now();
  private pid: number | null = null;
  private child: ChildProcess | null = null;
  private containment: Containment | null = null;
  private endReason: 'timeout' | 'cancelled' | null = null;
  /** Why the agent itself ended it, reported with the result (e.g. `agent stopping`). */
  private endWhy: string | null = null;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly pending: Record<Stream, { parts: Buffer[]; bytes: number; timer: NodeJS.Timeout | null }> = {
    stdout: { parts: [], bytes: 0, timer: null },
    stderr: { parts: [], bytes: 0, timer: null },
  };
  private pausedPipes = false;
  private backpressureTimer: NodeJS.Timeout | null = null;
  private tmpDir: string | null = null;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private streamsOpen = 0;
  private done = false;

  /** What to run; null for a result restored from the journal (nothing to start). */
  readonly msg: ServerMessage<'exec.run'> | null;
  readonly id: string;
  readonly taskId: string;

  /**
   * `source` is an exec.run to start, or a finished result read back from the journal after an
   * agent restart: then there is no process, only the result and the output still held,
   * delivered on the server's exec.resume like any other.
   */
  constructor(
    source: ServerMessage<'exec.run'> | SavedResult,
    private readonly agentId: string,
    private readonly link: Link,
    private readonly log: AgentLog,
    private readonly limits: RunLimits,
    private readonly onDone: (r: Run) => void,
    /** User the script runs as (host policy `runAs`); null = the agent's own user. */
    readonly user: string | null = null,
  ) {
    this.id = source.executionId;
    this.taskId = source.taskId;
    if ('type' in source) {
      this.msg = source;
      this.live = link.connected();
      return;
    }
    this.msg = null;
    this.live = false;
    this.done = true;
    this.startedAt = source.startedAt;
    this.finished = {
      status: source.status,
      exitCode: source.exitCode,
      signal: source.signal,
      finishedAt: source.finishedAt,
      ...(source.error ? { error: source.error } : {}),
      ...(source.reason ? { reason: source.reason } : {}),
    };
    this.truncated = source.truncated;
    this.chunks = source.chunks.slice();
    this.bufBytes = this.chunks.reduce((n, c) => n + c.data.length, 0);
    this.seq = source.seq;
    this.sentSeq = source.seq;
  }

  /** The finished result and the output still held, for the journal. */
  snapshot(): SavedResult {
    const f = this.finished;
    if (!f) throw new Error('snapshot of a running execution');
    return {
      executionId: this.id,
      taskId: this.taskId,
      status: f.status,
      exitCode: f.exitCode,
      signal: f.signal,
      startedAt: this.startedAt,
      finishedAt: f.finishedAt,
      error: f.error,
      reason: f.reason,
      truncated: this.truncated,
      seq: this.seq,
      chunks: this.chunks.slice(),
    };
  }

  get running(): boolean {
    return !this.finished;
  }

  start(): void {
    const m = this.msg;
    if (!m) return;
    try {
      this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-exec-'));
      fs.chmodSync(this.tmpDir, 0o700);
      const file = path.join(this.tmpDir, 'script');
      fs.writeFileSync(file, m.script, { mode: 0o700 });
      const user = this.user ? resolveUser(this.user, 'run a script') : null;
      let argv = m.interpreter === 'shebang' ? [file, ...m.args] : [m.interpreter, file, ...m.args];
      const scriptEnv: Record<string, string> = { ...m.env, MUSTER_EXECUTION_ID: m.executionId, MUSTER_TASK_ID: m.taskId, MUSTER_AGENT_ID: this.agentId };
      let env: NodeJS.ProcessEnv;
      let home = process.env['HOME'] || '/';
      if (user?.switching) {
        // Scripts as another user (host policy runAs). Everything before the switch runs as root:
        // the containment wrapper, systemd-run, setpriv. None of it may see what the server sent
        // (PATH, LD_PRELOAD, … would make root run the user's code), so those steps get a fixed
        // environment, and the script's own is read from a file only that user can read, by a
        // shell that already runs as the user. Nothing of the agent's environment passes either.
        const t = user.target;
        home = t.home && isDir(t.home) ? t.home : '/';
        env = {
          PATH: DEFAULT_PATH,
          LANG: utf8Locale(process.env),
          HOME: home,
          USER: t.name,
          LOGNAME: t.name,
          ...(process.env['TZ'] ? { TZ: process.env['TZ'] } : {}),
        };
        // The directory stays root's (0711): the user reads its files but cannot put a symlink in
        // it for the root-run cleanup to follow.
        fs.chmodSync(this.tmpDir, 0o711);
        fs.chownSync(file, t.uid, t.gid);
        const envFile = path.join(this.tmpDir, 'env');
        fs.writeFileSync(envFile, shellExports(scriptEnv), { mode: 0o600 });
        fs.chownSync(envFile, t.uid, t.gid);
        argv = [...switchUserArgv(t), '/bin/sh', '-c', '. "$1" || exit 126; shift; exec "$@"', 'muster-exec', envFile, ...argv];
      } else {
        env = {};
        for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MUSTER_AGENT_')) env[k] = v;
        Object.assign(env, scriptEnv);
      }
      this.containment = createContainment(this.agentId, m.executionId, (why) =>
        this.log.warn({ executionId: m.executionId, why }, 'no cgroup for this execution; falling back to its process group (setsid children can escape)'),
      );
      const full = this.containment.wrap(argv);
      const child = spawn(full[0]!, full.slice(1), {
        cwd: m.cwd ?? home,
        env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.child = child;
      child.on('error', (err) => {
        if (this.pid == null) this.complete('failed', null, null, `could not start: ${err.message}`);
        else this.log.warn({ executionId: this.id, err }, 'child process error');
      });
      child.on('spawn', () => {
        this.pid = child.pid ?? null;
        this.startedAt = Date.now();
        this.link.send({ type: 'exec.started', executionId: this.id, pid: this.pid, startedAt: this.startedAt, containment: this.containment?.describe });
        this.timer(() => this.terminate('timeout'), m.timeoutSec * 1000);
      });
      this.pipe(child.stdout!, 'stdout');
      this.pipe(child.stderr!, 'stderr');
      child.on('exit', (code, signal) => this.onExit(code, signal));
    } catch (err) {
      this.complete('failed', null, null, `could not start: ${(err as Error).message}`);
    }
  }

  private timer(fn: () => void, ms: number): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  private pipe(s: Readable, stream: Stream): void {
    this.streamsOpen++;
    s.on('data', (d: Buffer) => this.onData(stream, d));
    s.on('close', () => {
      this.streamsOpen--;
      this.maybeComplete();
    });
    s.on('error', () => {});
  }

  private onData(stream: Stream, d: Buffer): void {
    // One sequence across both streams in the order the pipes delivered: what the other stream
    // holds for coalescing came first, so it takes its sequence number before this data does.
    const other = stream === 'stdout' ? 'stderr' : 'stdout';
    if (this.pending[other].bytes > 0) this.flush(other);
    const p = this.pending[stream];
    p.parts.push(d);
    p.bytes += d.length;
    if (p.bytes >= this.limits.chunkBytes) this.flush(stream);
    else p.timer ??= setTimeout(() => this.flush(stream), this.limits.coalesceMs);
  }

  private flush(stream: Stream): void {
    const p = this.pending[stream];
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (p.bytes === 0) return;
    const all = p.parts.length === 1 ? p.parts[0]! : Buffer.concat(p.parts, p.bytes);
    p.parts = [];
    p.bytes = 0;
    for (let off = 0; off < all.length; off += this.limits.chunkBytes) this.addChunk(stream, all.subarray(off, off + this.limits.chunkBytes));
  }

  private addChunk(stream: Stream, data: Buffer): void {
    // Make room by forgetting chunks already sent; never forget one not yet sent: cut instead.
    while (this.bufBytes + data.length > this.limits.bufferBytes && this.chunks.length && this.chunks[0]!.seq < this.sentSeq) {
      this.bufBytes -= this.chunks.shift()!.data.length;
    }
    if (this.bufBytes + data.length > this.limits.bufferBytes) {
      if (!this.truncated) this.log.warn({ executionId: this.id }, 'output buffer full while the server is away; cutting output');
      this.truncated = true;
      // Keep what fits, so the cut lands at the buffer limit whatever the chunk boundaries were.
      const room = this.limits.bufferBytes - this.bufBytes;
      if (room <= 0) return;
      data = data.subarray(0, room);
    }
    this.chunks.push({ seq: this.seq++, stream, data });
    this.bufBytes += data.length;
    this.sendPending();
  }

  /** Sends every chunk not yet sent on this connection, in order; pauses the pipes when the socket backs up. */
  private sendPending(): void {
    if (!this.live || !this.link.connected()) return;
    const base = this.chunks.length ? this.chunks[0]!.seq : this.seq;
    if (this.sentSeq < base) this.sentSeq = base; // evicted before the server stored them: it sees a gap
    while (this.sentSeq < this.seq) {
      const c = this.chunks[this.sentSeq - base]!;
      // Bulk: a flood of output never delays heartbeats or a terminal's echo on the same socket.
      if (!this.link.sendBinary(encodeExecOutput(this.id, c.stream, c.seq, c.data), { bulk: true, key: this.id })) return;
      this.sentSeq++;
    }
    if (this.link.bufferedAmount() > this.limits.highWaterBytes) this.pausePipes();
  }

  private pausePipes(): void {
    if (this.pausedPipes || !this.child) return;
    this.pausedPipes = true;
    this.child.stdout?.pause();
    this.child.stderr?.pause();
    this.backpressureTimer = setInterval(() => {
      if (!this.link.connected() || this.link.bufferedAmount() < this.limits.lowWaterBytes) this.resumePipes();
    }, 10);
  }

  private resumePipes(): void {
    if (!this.pausedPipes) return;
    this.pausedPipes = false;
    if (this.backpressureTimer) clearInterval(this.backpressureTimer);
    this.backpressureTimer = null;
    this.child?.stdout?.resume();
    this.child?.stderr?.resume();
  }

  /** SIGTERM to the whole tree, SIGKILL after the grace period. */
  terminate(reason: 'timeout' | 'cancelled', why?: string): void {
    if (this.finished || this.endReason) return;
    this.endReason = reason;
    this.endWhy = why ?? null;
    this.log.info({ executionId: this.id, reason }, 'terminating execution');
    this.signalTree('SIGTERM');
    this.timer(() => this.signalTree('SIGKILL'), this.limits.killGraceMs);
  }

  /** Signals the container and the process group. */
  signalTree(sig: NodeJS.Signals): void {
    this.containment?.signal(sig);
    if (this.pid != null) {
      try {
        process.kill(-this.pid, sig);
      } catch {
        /* group gone */
      }
    }
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exitInfo = { code, signal };
    this.resumePipes();
    // Leftover processes (background jobs, setsid children) hold the pipes open: the execution is
    // over when its main process is, so after a short drain the rest of the tree is killed.
    this.timer(() => {
      if (this.done) return;
      this.signalTree('SIGKILL');
      this.timer(() => {
        this.child?.stdout?.destroy();
        this.child?.stderr?.destroy();
      }, 2000);
    }, this.limits.drainMs);
    this.maybeComplete();
  }

  private maybeComplete(): void {
    if (!this.exitInfo || this.streamsOpen > 0 || this.done) return;
    const { code, signal } = this.exitInfo;
    // Nothing may outlive the execution.
    if (this.containment && this.containment.pids().length) this.signalTree('SIGKILL');
    const status: Status = this.endReason ?? (code === 0 ? 'succeeded' : 'failed');
    this.complete(status, code, signal);
  }

  private complete(status: Status, exitCode: number | null, signal: string | null, error?: string): void {
    if (this.done) return;
    this.done = true;
    this.flush('stdout');
    this.flush('stderr');
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.resumePipes();
    this.finished = {
      status,
      exitCode,
      signal,
      finishedAt: Date.now(),
      ...(error ? { error } : {}),
      ...(this.endWhy && status === this.endReason ? { reason: this.endWhy } : {}),
    };
    if (this.tmpDir) fs.rm(this.tmpDir, { recursive: true, force: true }, () => {});
    const c = this.containment;
    if (c) {
      // The cgroup (or scope) can be removed only once the kernel has let go of its last member,
      // which may be a moment after cgroup.procs reads empty: retry until it is gone, backing off.
      let tries = 0;
      const rm = () => {
        if (c.pids().length) c.signal('SIGKILL');
        if (!c.dispose() && ++tries < 60) setTimeout(rm, Math.min(1000, 20 * tries)).unref();
      };
      rm();
    }
    // Journaled before it is reported (and logged): an agent restart before the server's ack does not lose it.
    this.onDone(this);
    this.log.info({ executionId: this.id, status, exitCode, signal }, 'execution finished');
    this.sendFinished();
  }

  private sendFinished(): void {
    if (!this.finished || !this.live || !this.link.connected()) return;
    this.sendPending();
    if (this.sentSeq < this.seq) return;
    const f = this.finished;
    this.link.send({
      type: 'exec.finished',
      executionId: this.id,
      status: f.status,
      exitCode: f.exitCode,
      signal: f.signal,
      startedAt: this.startedAt,
      finishedAt: f.finishedAt,
      outputSeq: this.seq,
      truncated: this.truncated,
      ...(f.error ? { error: f.error } : {}),
      ...(f.reason ? { reason: f.reason } : {}),
    });
  }

  /** The socket dropped: keep running, keep output (bounded), send nothing until resumed. */
  disconnected(): void {
    this.live = false;
    this.resumePipes();
  }

  /** After a reconnect: resend from `fromSeq`, then go on live (and report the result if done). */
  resume(fromSeq: number): void {
    this.live = true;
    this.sentSeq = Math.min(fromSeq, this.seq);
    if (this.pid != null) {
      this.link.send({ type: 'exec.started', executionId: this.id, pid: this.pid, startedAt: this.startedAt, containment: this.containment?.describe });
    }
    this.sendPending();
    this.sendFinished();
  }

  /** Last resort at agent exit, after the stop drain: kill the tree now (its result is not reported). */
  kill(): void {
    if (this.finished) return;
    this.endReason ??= 'cancelled';
    this.signalTree('SIGKILL');
  }
}

/**
 * `export NAME='value'` lines for a POSIX shell to source. Names must be shell identifiers (the
 * server allows no others; a name that is not one is refused rather than mangled); values are
 * single-quoted, so nothing in them is expanded.
 */
export function shellExports(env: Readonly<Record<string, string>>): string {
  let out = '';
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`environment name ${JSON.stringify(k.slice(0, 64))} is not a shell identifier`);
    out += `export ${k}='${v.replace(/'/g, "'\\''")}'\n`;
  }
  return out;
}
