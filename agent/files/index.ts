import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pathAllowed, type AgentMessage, type ServerMessage } from '../../protocol/index.js';
import type { AgentCapability, AgentContext } from '../capability.js';
import { readPasswd } from '../pty/login.js';
import { FileRecords, type FileRecord } from './records.js';

type StateItem = AgentMessage<'file.state'>['files'][number];

interface Incoming {
  m: ServerMessage<'file.apply'>;
  tmp: string;
  fh: fsp.FileHandle;
  hash: Hash;
  /** Bytes accepted (hashed and queued for writing), and bytes written. */
  received: number;
  written: number;
  writes: Promise<void>;
  uid: number;
  gid: number;
  existed: boolean;
  timer: NodeJS.Timeout;
  failed: boolean;
}

/** A file transfer with no data for this long is abandoned (the server times the target out too). */
const STALL_MS = 120_000;

/**
 * File distribution on the host: `file.apply` writes a revision atomically (temp file in the same
 * directory, fsync, rename, fsync of the directory) with its owner and mode after checking the host
 * policy's allowedPaths and the sha256, keeps the content it replaced, and records what it applied;
 * a timer compares the files with those records (stat, and a hash only when size, mtime or inode
 * moved) and reports drift as `file.state`.
 */
export function createFiles(ctx: AgentContext): AgentCapability<'file.apply' | 'file.remove' | 'file.forget'> & {
  onFileData(transferId: string, offset: number, data: Uint8Array): void;
} {
  const { log, link } = ctx;
  const records = new FileRecords(ctx.cfg.stateDir);
  const incoming = new Map<string, Incoming>();
  /** Last state reported per file (changes only are sent between full reports). */
  const reported = new Map<string, string>();
  let checkTimer: NodeJS.Timeout | undefined;
  let checking = false;
  /** Where a managed path is on this host's disk. */
  const onDisk = (p: string) => (ctx.cfg.fileRoot ? path.join(ctx.cfg.fileRoot, p) : p);

  /**
   * The host-side policy on what is really on disk: `pathAllowed` alone is lexical, so a symbolic
   * link to a directory inside an allowed path (`/etc/app/link -> /root`) would carry a write out
   * of it. The deepest existing ancestor of the path is resolved (realpath) and the result, with
   * the components still to be created, must be inside an allowed path, itself resolved or as
   * written. Null when allowed, else why not.
   */
  const outsideOnDisk = async (logical: string): Promise<string | null> => {
    const allowed = ctx.policy().view.allowedPaths;
    if (allowed == null) return null;
    const root = ctx.cfg.fileRoot ? await fsp.realpath(ctx.cfg.fileRoot) : '/';
    const resolve = async (p: string): Promise<string | null> => {
      let dir = onDisk(p);
      const rest: string[] = [];
      for (;;) {
        try {
          const real = path.join(await fsp.realpath(dir), ...rest);
          if (root === '/') return real;
          return real === root ? '/' : real.startsWith(`${root}/`) ? real.slice(root.length) : null;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if ((code !== 'ENOENT' && code !== 'ENOTDIR') || dir === path.dirname(dir)) throw err;
          rest.unshift(path.basename(dir));
          dir = path.dirname(dir);
        }
      }
    };
    const real = await resolve(path.dirname(logical));
    const target = real === null ? null : path.join(real, path.basename(logical));
    const bases = (await Promise.all(allowed.map((b) => resolve(b).catch(() => null)))).filter((b): b is string => b !== null);
    if (target !== null && pathAllowed([...allowed, ...bases], target)) return null;
    return `${logical} resolves to ${target ?? 'a place outside the file root'} (through a symbolic link), outside the host policy's allowedPaths`;
  };

  const result = (
    transferId: string,
    state: 'applied' | 'unchanged' | 'removed' | 'failed',
    extra: { reason?: string; code?: string; contentChanged?: boolean } = {},
  ) => {
    link.send({ type: 'file.result', transferId, state, ...extra, ...(extra.reason ? { reason: extra.reason.slice(0, 2048) } : {}) });
  };

  const hashFile = async (file: string): Promise<string> => {
    const h = createHash('sha256');
    for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
    return h.digest('hex');
  };

  const idOf = (name: string | null, kind: 'user' | 'group', fallback: number): number => {
    if (name == null) return fallback;
    if (/^\d+$/.test(name)) return Number(name);
    if (kind === 'user') {
      const u = readPasswd().find((e) => e.name === name);
      if (!u) throw new Error(`no such user ${JSON.stringify(name)}`);
      return u.uid;
    }
    let text = '';
    try {
      text = fs.readFileSync('/etc/group', 'utf8');
    } catch {
      /* none */
    }
    for (const line of text.split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] && /^\d+$/.test(f[2])) return Number(f[2]);
    }
    throw new Error(`no such group ${JSON.stringify(name)}`);
  };

  const fsyncDir = async (dir: string) => {
    const d = await fsp.open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  };

  /** Bumped whenever an apply or a removal replaces a file's record (a check running meanwhile is stale). */
  const generation = new Map<string, number>();
  const bump = (fileId: string) => generation.set(fileId, (generation.get(fileId) ?? 0) + 1);
  /** Files whose apply is between its last byte (or its metadata fix) and its new record: not checked. */
  const settling = new Set<string>();

  const record = (m: ServerMessage<'file.apply'>, st: fs.Stats, previous: string | null): FileRecord => {
    bump(m.fileId);
    const r: FileRecord = {
      fileId: m.fileId,
      revision: m.revision,
      path: m.path,
      sha256: m.sha256,
      size: st.size,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtimeMs: st.mtimeMs,
      ino: st.ino,
      previous,
    };
    records.set(r);
    reported.set(m.fileId, `ok:${m.sha256}:`);
    return r;
  };

  async function apply(m: ServerMessage<'file.apply'>): Promise<void> {
    const policy = ctx.policy().view;
    if (!pathAllowed(policy.allowedPaths, m.path)) {
      const why =
        policy.source === 'lockdown'
          ? `host policy is locked down: ${policy.error ?? 'policy file rejected'}`
          : `${m.path} is outside the host policy's allowedPaths (${(policy.allowedPaths ?? []).join(', ') || 'none'})`;
      return result(m.transferId, 'failed', { code: 'policy_denied', reason: why });
    }
    const escapes = await outsideOnDisk(m.path);
    if (escapes) return result(m.transferId, 'failed', { code: 'policy_denied', reason: escapes });
    const file = onDisk(m.path);
    let existing: fs.Stats | null = null;
    try {
      existing = await fsp.lstat(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (existing && !existing.isFile()) return result(m.transferId, 'failed', { reason: `${m.path} exists and is not a regular file` });
    const myUid = process.getuid?.() ?? 0;
    const myGid = process.getgid?.() ?? 0;
    const uid = idOf(m.owner, 'user', existing?.uid ?? myUid);
    const gid = idOf(m.group, 'group', existing?.gid ?? myGid);
    if (existing && existing.size === m.size && (await hashFile(file)) === m.sha256) {
      const metaOk = (existing.mode & 0o7777) === m.mode && existing.uid === uid && existing.gid === gid;
      settling.add(m.fileId);
      try {
        if (!metaOk) {
          await fsp.chown(file, uid, gid);
          await fsp.chmod(file, m.mode);
        }
        record(m, await fsp.stat(file), records.get(m.fileId)?.previous ?? null);
      } finally {
        settling.delete(m.fileId);
      }
      return result(m.transferId, metaOk ? 'unchanged' : 'applied', { contentChanged: false });
    }
    const dir = path.dirname(file);
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    const tmp = path.join(dir, `.${path.basename(file)}.muster-${m.transferId.slice(0, 8)}.tmp`);
    const fh = await fsp.open(tmp, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o600);
    const t: Incoming = {
      m,
      tmp,
      fh,
      hash: createHash('sha256'),
      received: 0,
      written: 0,
      writes: Promise.resolve(),
      uid,
      gid,
      existed: Boolean(existing),
      timer: setTimeout(() => void abort(m.transferId, `no data for ${STALL_MS / 1000} s`), STALL_MS),
      failed: false,
    };
    incoming.set(m.transferId, t);
    if (m.size === 0) return finish(t);
    link.send({ type: 'file.ack', transferId: m.transferId, offset: 0 });
  }

  function onFileData(transferId: string, offset: number, data: Uint8Array): void {
    const t = incoming.get(transferId);
    if (!t || t.failed) return;
    if (offset !== t.received || t.received + data.length > t.m.size) {
      void abort(transferId, `unexpected data at offset ${offset} (expected ${t.received})`);
      return;
    }
    t.received += data.length;
    t.hash.update(data);
    t.timer.refresh();
    const at = offset;
    t.writes = t.writes
      .then(async () => {
        if (t.failed) return;
        let done = 0;
        while (done < data.length) done += (await t.fh.write(data, done, data.length - done, at + done)).bytesWritten;
        t.written = at + data.length;
        // Acknowledged once on disk: the server sends more only as fast as this host writes.
        link.send({ type: 'file.ack', transferId, offset: t.written });
        if (t.written === t.m.size) await finish(t);
      })
      .catch((err: unknown) => abort(transferId, `write failed: ${(err as Error).message}`));
  }

  async function finish(t: Incoming): Promise<void> {
    const { m } = t;
    const file = onDisk(m.path);
    settling.add(m.fileId);
    incoming.delete(m.transferId);
    clearTimeout(t.timer);
    try {
      const digest = t.hash.digest('hex');
      if (digest !== m.sha256) throw new Error(`sha256 mismatch: received ${digest}, expected ${m.sha256}`);
      await t.fh.chown(t.uid, t.gid);
      await t.fh.chmod(m.mode);
      await t.fh.sync();
      await t.fh.close();
      // The bytes it replaces are kept (one previous version per file) before the switch.
      let previous = records.get(m.fileId)?.previous ?? null;
      if (t.existed) {
        previous = records.previousPath(m.fileId);
        fs.mkdirSync(records.dir, { recursive: true, mode: 0o700 });
        await fsp.copyFile(file, previous);
      }
      await fsp.rename(t.tmp, file);
      await fsyncDir(path.dirname(file));
      record(m, await fsp.stat(file), previous);
      log.info({ path: m.path, revision: m.revision, size: m.size }, 'managed file applied');
      result(m.transferId, 'applied', { contentChanged: true });
    } catch (err) {
      await t.fh.close().catch(() => {});
      await fsp.rm(t.tmp, { force: true });
      result(m.transferId, 'failed', { reason: (err as Error).message });
    } finally {
      settling.delete(m.fileId);
    }
  }

  async function abort(transferId: string, reason: string | null): Promise<void> {
    const t = incoming.get(transferId);
    if (!t) return;
    t.failed = true;
    incoming.delete(transferId);
    clearTimeout(t.timer);
    await t.writes.catch(() => {});
    await t.fh.close().catch(() => {});
    await fsp.rm(t.tmp, { force: true });
    if (reason) result(transferId, 'failed', { reason });
  }

  async function remove(m: ServerMessage<'file.remove'>): Promise<void> {
    if (!pathAllowed(ctx.policy().view.allowedPaths, m.path))
      return result(m.transferId, 'failed', { code: 'policy_denied', reason: `${m.path} is outside the host policy's allowedPaths` });
    const escapes = await outsideOnDisk(m.path);
    if (escapes) return result(m.transferId, 'failed', { code: 'policy_denied', reason: escapes });
    const file = onDisk(m.path);
    const r = records.get(m.fileId);
    let st: fs.Stats | null = null;
    try {
      st = await fsp.lstat(file);
    } catch {
      /* gone already */
    }
    if (st && !r) return result(m.transferId, 'failed', { reason: 'this agent did not put the file there; left in place' });
    if (st && r && (!st.isFile() || (await hashFile(file)) !== r.sha256)) {
      records.delete(m.fileId);
      return result(m.transferId, 'failed', { reason: 'the file was changed on the host since it was applied; left in place and no longer managed' });
    }
    if (st) {
      await fsp.rm(file);
      await fsyncDir(path.dirname(file));
    }
    bump(m.fileId);
    records.delete(m.fileId);
    reported.delete(m.fileId);
    result(m.transferId, 'removed');
  }

  /** One file against its record. Hashes only when the cheap signals moved. */
  async function check(r: FileRecord): Promise<StateItem> {
    const base = { fileId: r.fileId, revision: r.revision, path: r.path };
    let st: fs.Stats;
    try {
      st = await fsp.lstat(onDisk(r.path));
    } catch {
      return { ...base, state: 'missing', sha256: null, reason: 'the file is gone' };
    }
    if (!st.isFile()) return { ...base, state: 'drifted', sha256: null, reason: 'no longer a regular file' };
    const metaDiff =
      (st.mode & 0o7777) !== r.mode
        ? `mode ${(st.mode & 0o7777).toString(8)} (was ${r.mode.toString(8)})`
        : st.uid !== r.uid || st.gid !== r.gid
          ? `owner ${st.uid}:${st.gid} (was ${r.uid}:${r.gid})`
          : null;
    if (st.size === r.size && st.mtimeMs === r.mtimeMs && st.ino === r.ino) {
      return metaDiff ? { ...base, state: 'drifted', sha256: r.sha256, reason: metaDiff } : { ...base, state: 'ok', sha256: r.sha256 };
    }
    const sha = await hashFile(onDisk(r.path));
    if (sha !== r.sha256) return { ...base, state: 'drifted', sha256: sha, reason: 'content changed on the host' };
    if (metaDiff) return { ...base, state: 'drifted', sha256: sha, reason: metaDiff };
    // Same bytes, touched: remember the new stat so the next check is cheap again (unless an
    // apply or removal replaced the record while this check hashed).
    if (records.get(r.fileId) === r) records.set({ ...r, mtimeMs: st.mtimeMs, ino: st.ino, size: st.size });
    return { ...base, state: 'ok', sha256: sha };
  }

  async function checkAll(full: boolean): Promise<void> {
    if (checking || !link.connected()) return;
    checking = true;
    try {
      const items: StateItem[] = [];
      /** An apply in flight replaces the file and its record, and reports its own result. */
      const applying = (fileId: string) => settling.has(fileId) || [...incoming.values()].some((t) => t.m.fileId === fileId);
      for (const r of records.all()) {
        if (applying(r.fileId)) continue;
        const gen = generation.get(r.fileId) ?? 0;
        const it = await check(r).catch((err: unknown) => ({
          fileId: r.fileId,
          revision: r.revision,
          path: r.path,
          state: 'drifted' as const,
          sha256: null,
          reason: `cannot check: ${(err as Error).message}`,
        }));
        // Checked against a record that an apply or a removal replaced meanwhile: stale.
        if ((generation.get(r.fileId) ?? 0) !== gen || applying(r.fileId)) continue;
        const key = `${it.state}:${it.sha256 ?? ''}:${it.reason ?? ''}`;
        if (full || reported.get(r.fileId) !== key) items.push(it);
        reported.set(r.fileId, key);
      }
      for (let i = 0; i < items.length || (full && i === 0); i += 1000)
        link.send({ type: 'file.state', full: full && i === 0, files: items.slice(i, i + 1000) });
    } finally {
      checking = false;
    }
  }

  const fail = (transferId: string, err: unknown) => {
    log.warn({ transferId, err: (err as Error).message }, 'file apply failed');
    result(transferId, 'failed', { reason: (err as Error).message });
  };

  return {
    handlers: {
      'file.apply': (m) => void apply(m).catch((err: unknown) => fail(m.transferId, err)),
      'file.remove': (m) => void remove(m).catch((err: unknown) => fail(m.transferId, err)),
      'file.forget': (m) => {
        records.delete(m.fileId);
        reported.delete(m.fileId);
      },
    },
    onFileData,
    onWelcome: () => {
      reported.clear();
      void checkAll(true).catch((err: unknown) => log.warn({ err: String(err) }, 'file check failed'));
      clearInterval(checkTimer);
      checkTimer = setInterval(
        () => void checkAll(false).catch((err: unknown) => log.warn({ err: String(err) }, 'file check failed')),
        ctx.cfg.fileCheckSec * 1000,
      );
      checkTimer.unref();
    },
    onDisconnected: () => {
      clearInterval(checkTimer);
      // The server sends the command again when we are back; a half-written temp file must not stay.
      for (const id of [...incoming.keys()]) void abort(id, null);
    },
    stop: async () => {
      clearInterval(checkTimer);
      for (const id of [...incoming.keys()]) await abort(id, null);
    },
  };
}
