import { createHash, randomUUID, type Hash } from 'node:crypto';
import path from 'node:path';
import type { Response } from 'express';
import { ERROR_CODES, type AgentMessage, type ErrorCode } from '../../protocol/index.js';
import type { Actor } from '../auth/audit.js';
import type { Core } from '../core.js';
import type { Received } from '../files/content.js';
import type { TransferManager } from '../files/transfer.js';
import { ApiError } from '../http/errors.js';

/** A transfer with no word from the agent for this long fails (the agent abandons its side after 120 s). */
const STALL_MS = 60_000;

/** What a finished transfer moved (audited, and an upload's answer). */
export interface TransferOutcome {
  path: string;
  size: number;
  sha256: string;
}

interface Base {
  id: string;
  agentId: string;
  sessionId: string;
  actor: Actor;
  timer: NodeJS.Timeout;
  settle(err: ApiError | null, out?: TransferOutcome): void;
}
interface Upload extends Base {
  kind: 'upload';
  name: string;
  size: number;
  sha256: string;
}
interface Download extends Base {
  kind: 'download';
  asked: string;
  res: Response;
  hash: Hash;
  received: number;
  size: number | null;
  path: string | null;
  acked: number;
}
type Pending = Upload | Download;

const codeOf = (c: string | undefined): ErrorCode => ((ERROR_CODES as readonly string[]).includes(c ?? '') ? (c as ErrorCode) : 'unavailable');

/**
 * File transfer through a terminal session's agent (operator who owns the session): an upload is
 * received to a temporary file here (size-capped, hashed) and streamed to the agent by the file
 * distribution's TransferManager (FILE_DATA frames, `file.ack` flow control, the shared in-flight
 * budget); a download is streamed from the agent straight into the HTTP answer, acknowledged as
 * the answer takes it (`term.download.ack`), so at most the agent's window is in memory. The agent
 * puts uploads into the shell's current directory and enforces its host policy. Both are audited
 * with path, size and sha256, refusals too.
 */
export class TerminalTransfers {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly core: Core,
    private readonly manager: () => TransferManager,
  ) {}

  get active(): number {
    return this.pending.size;
  }

  holds(agentId: string, transferId: string): boolean {
    return this.pending.get(transferId)?.agentId === agentId;
  }

  private audit(p: Pending, ok: boolean, details: Record<string, unknown>): void {
    void this.core.audit
      .record({
        actor: p.actor,
        action: p.kind === 'upload' ? 'terminal.upload' : 'terminal.download',
        targetType: 'terminal',
        targetId: p.sessionId,
        ok,
        details: { agentId: p.agentId, ...details },
      })
      .catch((err: unknown) => this.core.log.error({ err, transferId: p.id }, 'could not audit a terminal transfer'));
  }

  private end(p: Pending): void {
    clearTimeout(p.timer);
    this.pending.delete(p.id);
    if (p.kind === 'upload') this.manager().end(p.id);
  }

  /** Fails a transfer (agent refusal, timeout, disconnect); `cancelAgent`: tell the agent to drop its side. */
  private fail(p: Pending, code: ErrorCode, message: string, cancelAgent: boolean): void {
    if (!this.pending.has(p.id)) return;
    this.end(p);
    if (cancelAgent) this.core.fleet.send(p.agentId, { type: 'term.transfer.cancel', transferId: p.id, reason: message.slice(0, 255) });
    const what = p.kind === 'upload' ? { name: p.name, size: p.size, sha256: p.sha256 } : { path: p.path ?? p.asked };
    this.audit(p, false, { ...what, code, reason: message });
    p.settle(new ApiError(code, message));
  }

  /** Puts `body` (already received and hashed here) into the shell's current directory as `name`. */
  upload(s: { id: string; agentId: string }, actor: Actor, name: string, body: Received): Promise<TransferOutcome> {
    return new Promise((resolve, reject) => {
      const id = randomUUID();
      const p: Upload = {
        kind: 'upload',
        id,
        agentId: s.agentId,
        sessionId: s.id,
        actor,
        name,
        size: body.size,
        sha256: body.sha256,
        timer: setTimeout(() => this.fail(p, 'unavailable', `the agent did not answer for ${STALL_MS / 1000} s`, true), STALL_MS),
        settle: (err, out) => (err ? reject(err) : resolve(out!)),
      };
      this.pending.set(id, p);
      this.manager().add(id, s.agentId, body.tmp, body.size);
      if (!this.core.fleet.send(s.agentId, { type: 'term.upload', transferId: id, sessionId: s.id, name, size: body.size, sha256: body.sha256 })) {
        this.fail(p, 'agent_offline', 'the agent is offline', false);
      }
    });
  }

  /**
   * Streams the file at `asked` (absolute, or relative to the shell's current directory) into
   * `res`. Resolves once it is sent; rejects with an ApiError before the first byte (the caller
   * answers it); a failure after the headers went out cuts the answer short.
   */
  download(s: { id: string; agentId: string }, actor: Actor, asked: string, res: Response): Promise<TransferOutcome | null> {
    return new Promise((resolve, reject) => {
      const id = randomUUID();
      const p: Download = {
        kind: 'download',
        id,
        agentId: s.agentId,
        sessionId: s.id,
        actor,
        asked,
        res,
        hash: createHash('sha256'),
        received: 0,
        size: null,
        path: null,
        acked: 0,
        timer: setTimeout(() => this.fail(p, 'unavailable', `the agent did not answer for ${STALL_MS / 1000} s`, true), STALL_MS),
        settle: (err, out) => {
          if (!err) return resolve(out!);
          if (!res.headersSent) return reject(err);
          res.destroy(err); // the browser sees a cut download, not a file with a wrong end
          resolve(null);
        },
      };
      this.pending.set(id, p);
      res.on('close', () => {
        if (this.pending.has(id)) this.fail(p, 'unavailable', 'the download was abandoned by the client', true);
      });
      const maxBytes = this.core.config.terminalTransferMaxBytes;
      if (!this.core.fleet.send(s.agentId, { type: 'term.download', transferId: id, sessionId: s.id, path: asked, maxBytes })) {
        this.fail(p, 'agent_offline', 'the agent is offline', false);
      }
    });
  }

  /** `file.ack` for an upload: the agent wrote every byte below `offset`. */
  ack(agentId: string, m: AgentMessage<'file.ack'>): void {
    const p = this.pending.get(m.transferId);
    if (p?.kind !== 'upload' || p.agentId !== agentId) return;
    p.timer.refresh();
    this.manager().ack(agentId, m.transferId, m.offset);
  }

  /** `term.transfer` from the agent. */
  result(agentId: string, m: AgentMessage<'term.transfer'>): void {
    const p = this.pending.get(m.transferId);
    if (!p || p.agentId !== agentId) return;
    p.timer.refresh();
    if (m.state === 'failed') return this.fail(p, codeOf(m.code), m.reason ?? 'the agent could not transfer the file', false);
    if (p.kind === 'upload') {
      if (m.state !== 'done') return;
      this.end(p);
      const out = { path: m.path ?? p.name, size: p.size, sha256: p.sha256 };
      this.audit(p, true, out);
      return p.settle(null, out);
    }
    if (m.state === 'ready') {
      if (p.size !== null || m.size === undefined || m.size > this.core.config.terminalTransferMaxBytes) {
        return this.fail(p, 'bad_request', 'the agent announced the download twice or without a valid size', true);
      }
      p.size = m.size;
      p.path = m.path ?? p.asked;
      p.res.status(200);
      p.res.setHeader('Content-Type', 'application/octet-stream');
      p.res.setHeader('Content-Length', String(m.size));
      p.res.setHeader('X-Muster-Path', encodeURI(p.path));
      p.res.attachment(path.basename(p.path) || 'download');
      p.res.flushHeaders();
      return;
    }
    // done: every frame came before this message (it is ordered behind them).
    const sha256 = p.hash.digest('hex');
    if (p.size === null || p.received !== p.size || (m.sha256 && m.sha256 !== sha256)) {
      return this.fail(p, 'unavailable', `the download ended after ${p.received} of ${p.size ?? '?'} bytes or with another sha256`, true);
    }
    this.end(p);
    const out = { path: p.path ?? p.asked, size: p.size, sha256 };
    this.audit(p, true, out);
    p.res.end(() => p.settle(null, out));
  }

  /** FILE_DATA from an agent: the next bytes of a download, passed to the HTTP answer. */
  data(agentId: string, transferId: string, offset: number, data: Uint8Array): void {
    const p = this.pending.get(transferId);
    if (p?.kind !== 'download' || p.agentId !== agentId) return;
    if (p.size === null || offset !== p.received || p.received + data.length > p.size) {
      return this.fail(p, 'unavailable', `unexpected download data at offset ${offset} (expected ${p.received})`, true);
    }
    p.timer.refresh();
    p.received += data.length;
    p.hash.update(data);
    const upTo = p.received;
    // Acknowledged once the answer took it (at once, or when its buffer drained): the agent sends
    // at most its window past the acknowledged offset, so a slow client slows the agent's reads.
    const ack = () => {
      if (!this.pending.has(p.id) || upTo <= p.acked) return;
      p.acked = upTo;
      this.core.fleet.send(p.agentId, { type: 'term.download.ack', transferId: p.id, offset: upTo });
    };
    if (p.res.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength))) ack();
    else p.res.once('drain', ack);
  }

  /** The agent's socket closed: its transfers fail. */
  agentGone(agentId: string): void {
    for (const p of [...this.pending.values()]) if (p.agentId === agentId) this.fail(p, 'agent_offline', 'the agent disconnected', false);
  }

  /** A session ended: its transfers fail (the agent drops its side with the shell). */
  sessionEnded(sessionId: string): void {
    for (const p of [...this.pending.values()]) if (p.sessionId === sessionId) this.fail(p, 'unavailable', 'the terminal session ended', true);
  }

  stop(): void {
    for (const p of [...this.pending.values()]) this.fail(p, 'unavailable', 'server shutdown', true);
  }
}
