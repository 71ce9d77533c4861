import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { allocFileData, pathAllowed, terminalDenial, type ServerMessage } from '../../protocol/index.js';
import type { AgentCapability, AgentContext } from '../capability.js';

/** A transfer with no word from the server for this long is abandoned. */
const STALL_MS = 120_000;

type Code = 'policy_denied' | 'conflict' | 'not_found' | 'forbidden' | 'payload_too_large' | 'bad_request' | 'unavailable';
class Refusal extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
  }
}

interface Incoming {
  id: string;
  size: number;
  sha256: string;
  target: string;
  tmp: string;
  fh: fsp.FileHandle;
  hash: Hash;
  received: number;
  writes: Promise<void>;
  timer: NodeJS.Timeout;
  failed: boolean;
}
interface Outgoing {
  id: string;
  fh: fsp.FileHandle;
  size: number;
  sent: number;
  acked: number;
  hash: Hash;
  reading: boolean;
  timer: NodeJS.Timeout;
  ended: boolean;
}

/**
 * File transfer through a terminal: `term.upload` writes a file into the current directory of the
 * session's shell (read from /proc/<pid>/cwd), `term.download` streams a file from it. The host
 * policy applies as to file distribution: terminals must be allowed, and the resolved path (links
 * followed) must be inside `allowedPaths`. The agent does the I/O as its own user, so a shell
 * running as another user (runAs, --terminal-user) is refused rather than lent the agent's rights.
 * Uploads never overwrite: the file is written to a temp file, checked against its sha256 and
 * linked into place only if the name is still free.
 */
export function createTermTransfers(
  ctx: AgentContext,
  pidOf: (sessionId: string) => number | null,
): AgentCapability<'term.upload' | 'term.download' | 'term.download.ack' | 'term.transfer.cancel'> & {
  /** FILE_DATA for an upload: true when the transfer is one of these. */
  onFileData(transferId: string, offset: number, data: Uint8Array): boolean;
} {
  const { log, link } = ctx;
  const incoming = new Map<string, Incoming>();
  const outgoing = new Map<string, Outgoing>();

  const send = (
    transferId: string,
    m: { state: 'ready' | 'done' | 'failed'; path?: string; size?: number; sha256?: string; reason?: string; code?: string },
  ): void => void link.send({ type: 'term.transfer', transferId, ...m, ...(m.reason ? { reason: m.reason.slice(0, 2048) } : {}) });

  /** The shell's current directory, resolved, after the session and policy checks. */
  async function shellDir(sessionId: string): Promise<{ dir: string; uid: number; gid: number }> {
    const pid = pidOf(sessionId);
    if (pid == null) throw new Refusal('not_found', 'no such terminal session on this agent');
    const denied = terminalDenial(ctx.policy().view);
    if (denied) throw new Refusal('policy_denied', denied);
    const st = await fsp.stat(`/proc/${pid}`);
    const me = process.getuid?.() ?? 0;
    if (st.uid !== me) {
      throw new Refusal(
        'forbidden',
        `the shell runs as uid ${st.uid}, not as the agent's user (uid ${me}): file transfer would lend it the agent's rights, so it is refused`,
      );
    }
    let cwd: string;
    try {
      cwd = await fsp.realpath(await fsp.readlink(`/proc/${pid}/cwd`));
    } catch (err) {
      throw new Refusal('unavailable', `cannot read the shell's current directory: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    return { dir: cwd, uid: st.uid, gid: st.gid };
  }

  /** Refuses a resolved path outside the policy's allowedPaths (themselves as written or resolved). */
  async function checkAllowed(real: string): Promise<void> {
    const policy = ctx.policy().view;
    const allowed = policy.allowedPaths;
    if (allowed == null) return;
    const resolved = (await Promise.all(allowed.map((b) => fsp.realpath(b).catch(() => null)))).filter((b): b is string => b !== null);
    if (!pathAllowed([...allowed, ...resolved], real)) {
      throw new Refusal('policy_denied', `${real} is outside the host policy's allowedPaths (${allowed.join(', ') || 'none'})`);
    }
  }

  const refused = (transferId: string, err: unknown) => {
    const r = err instanceof Refusal ? err : new Refusal('unavailable', (err as Error).message);
    log.warn({ transferId, code: r.code, reason: r.message }, 'terminal file transfer refused');
    send(transferId, { state: 'failed', code: r.code, reason: r.message });
  };

  async function dropIncoming(t: Incoming): Promise<void> {
    t.failed = true;
    clearTimeout(t.timer);
    incoming.delete(t.id);
    await t.writes.catch(() => {});
    await t.fh.close().catch(() => {});
    await fsp.rm(t.tmp, { force: true });
  }

  async function upload(m: ServerMessage<'term.upload'>): Promise<void> {
    if (m.name === '.' || m.name === '..' || m.name.includes('/') || m.name.includes('\0'))
      throw new Refusal('bad_request', 'the name must be a plain file name');
    const { dir } = await shellDir(m.sessionId);
    const target = path.join(dir, m.name);
    await checkAllowed(target);
    if (
      await fsp.lstat(target).then(
        () => true,
        () => false,
      )
    )
      throw new Refusal('conflict', `${target} already exists; nothing was overwritten`);
    const tmp = path.join(dir, `.${m.name.slice(0, 200)}.muster-${m.transferId.slice(0, 8)}.tmp`);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(tmp, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Refusal(
        code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? 'forbidden' : 'unavailable',
        `cannot write in ${dir}: ${code ?? (err as Error).message}`,
      );
    }
    const t: Incoming = {
      id: m.transferId,
      size: m.size,
      sha256: m.sha256,
      target,
      tmp,
      fh,
      hash: createHash('sha256'),
      received: 0,
      writes: Promise.resolve(),
      failed: false,
      timer: setTimeout(
        () => void dropIncoming(t).then(() => send(m.transferId, { state: 'failed', code: 'unavailable', reason: `no data for ${STALL_MS / 1000} s` })),
        STALL_MS,
      ),
    };
    incoming.set(m.transferId, t);
    if (m.size === 0) return finishUpload(t);
    link.send({ type: 'file.ack', transferId: m.transferId, offset: 0 });
  }

  async function finishUpload(t: Incoming): Promise<void> {
    const sha256 = t.hash.digest('hex');
    if (sha256 !== t.sha256) {
      await dropIncoming(t);
      return send(t.id, { state: 'failed', code: 'unavailable', reason: `the bytes received have sha256 ${sha256}, not ${t.sha256}` });
    }
    try {
      await t.fh.chmod(0o644);
      await t.fh.sync();
      await t.fh.close();
      // link() never replaces: a file that appeared under the name meanwhile stays as it is.
      await fsp.link(t.tmp, t.target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      await dropIncoming(t);
      return send(t.id, {
        state: 'failed',
        code: code === 'EEXIST' ? 'conflict' : 'unavailable',
        reason:
          code === 'EEXIST' ? `${t.target} already exists; nothing was overwritten` : `could not put the file in place: ${code ?? (err as Error).message}`,
      });
    }
    clearTimeout(t.timer);
    incoming.delete(t.id);
    await fsp.rm(t.tmp, { force: true });
    log.info({ transferId: t.id, path: t.target, size: t.size }, 'terminal upload written');
    send(t.id, { state: 'done', path: t.target, size: t.size, sha256 });
  }

  function onFileData(transferId: string, offset: number, data: Uint8Array): boolean {
    const t = incoming.get(transferId);
    if (!t) return false;
    if (t.failed) return true;
    if (offset !== t.received || t.received + data.length > t.size) {
      void dropIncoming(t).then(() =>
        send(transferId, { state: 'failed', code: 'bad_request', reason: `unexpected data at offset ${offset} (expected ${t.received})` }),
      );
      return true;
    }
    t.received += data.length;
    t.hash.update(data);
    t.timer.refresh();
    const at = offset;
    const bytes = Uint8Array.from(data); // the frame's buffer is not ours past this call
    t.writes = t.writes
      .then(async () => {
        if (t.failed) return;
        let done = 0;
        while (done < bytes.length) done += (await t.fh.write(bytes, done, bytes.length - done, at + done)).bytesWritten;
        // Acknowledged once written: the server sends more only as fast as this disk takes it.
        link.send({ type: 'file.ack', transferId, offset: at + bytes.length });
        if (at + bytes.length === t.size) await finishUpload(t);
      })
      .catch((err: unknown) => {
        if (t.failed) return;
        void dropIncoming(t).then(() =>
          send(transferId, { state: 'failed', code: 'unavailable', reason: `write failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }),
        );
      });
    return true;
  }

  function endOutgoing(o: Outgoing): void {
    if (o.ended) return;
    o.ended = true;
    clearTimeout(o.timer);
    outgoing.delete(o.id);
    void o.fh.close().catch(() => {});
  }

  async function download(m: ServerMessage<'term.download'>): Promise<void> {
    const { dir } = await shellDir(m.sessionId);
    const asked = path.isAbsolute(m.path) ? m.path : path.join(dir, m.path);
    let real: string;
    try {
      real = await fsp.realpath(asked);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Refusal(
        code === 'ENOENT' || code === 'ENOTDIR' ? 'not_found' : 'forbidden',
        `${asked}: ${code === 'ENOENT' ? 'no such file' : (code ?? (err as Error).message)}`,
      );
    }
    await checkAllowed(real);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (err) {
      throw new Refusal('forbidden', `cannot read ${real}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new Refusal('bad_request', `${real} is not a regular file`);
    }
    if (st.size > m.maxBytes) {
      await fh.close();
      throw new Refusal('payload_too_large', `${real} is ${st.size} bytes; at most ${m.maxBytes} (MUSTER_TERMINAL_TRANSFER_MAX_BYTES)`);
    }
    const o: Outgoing = {
      id: m.transferId,
      fh,
      size: st.size,
      sent: 0,
      acked: 0,
      hash: createHash('sha256'),
      reading: false,
      ended: false,
      timer: setTimeout(() => {
        endOutgoing(o);
        send(o.id, { state: 'failed', code: 'unavailable', reason: `no acknowledgement for ${STALL_MS / 1000} s` });
      }, STALL_MS),
    };
    outgoing.set(o.id, o);
    send(o.id, { state: 'ready', path: real, size: st.size });
    pump(o);
  }

  /** Reads and sends chunks while the window has room; the server's acks call it again. */
  function pump(o: Outgoing): void {
    if (o.ended || o.reading) return;
    if (o.sent >= o.size) {
      endOutgoing(o);
      // Ordered behind this transfer's frames (same stream key): the server has every byte first.
      send(o.id, { state: 'done', size: o.size, sha256: o.hash.digest('hex') });
      return;
    }
    // Chunk and window: terminalTransferChunkBytes / terminalTransferWindowBytes (agent config).
    const window = ctx.cfg.terminalTransferWindowBytes;
    if (o.sent - o.acked >= window) return;
    const len = Math.min(ctx.cfg.terminalTransferChunkBytes, o.size - o.sent, window - (o.sent - o.acked));
    const offset = o.sent;
    const { frame, payloadAt } = allocFileData(o.id, offset, len);
    o.reading = true;
    void (async () => {
      let done = 0;
      while (done < len) {
        const { bytesRead } = await o.fh.read(frame, payloadAt + done, len - done, offset + done);
        if (bytesRead === 0) throw new Error('the file shrank while it was read');
        done += bytesRead;
      }
    })().then(
      () => {
        o.reading = false;
        if (o.ended) return;
        o.hash.update(frame.subarray(payloadAt));
        o.sent += len;
        link.sendBinary(frame, { bulk: true, key: o.id });
        pump(o);
      },
      (err: unknown) => {
        o.reading = false;
        endOutgoing(o);
        send(o.id, { state: 'failed', code: 'unavailable', reason: `read failed: ${(err as Error).message}` });
      },
    );
  }

  const run = (transferId: string, p: Promise<void>) => void p.catch((err: unknown) => refused(transferId, err));

  return {
    handlers: {
      'term.upload': (m) => run(m.transferId, upload(m)),
      'term.download': (m) => run(m.transferId, download(m)),
      'term.download.ack': (m) => {
        const o = outgoing.get(m.transferId);
        if (!o || m.offset > o.sent || m.offset <= o.acked) return;
        o.acked = m.offset;
        o.timer.refresh();
        pump(o);
      },
      'term.transfer.cancel': (m) => {
        const t = incoming.get(m.transferId);
        if (t) void dropIncoming(t);
        const o = outgoing.get(m.transferId);
        if (o) endOutgoing(o);
      },
    },
    onFileData,
    // The server fails a disconnected agent's transfers: nothing here would be asked for again.
    onDisconnected: () => {
      for (const t of [...incoming.values()]) void dropIncoming(t);
      for (const o of [...outgoing.values()]) endOutgoing(o);
    },
    stop: async () => {
      await Promise.all([...incoming.values()].map((t) => dropIncoming(t)));
      for (const o of [...outgoing.values()]) endOutgoing(o);
    },
  };
}
