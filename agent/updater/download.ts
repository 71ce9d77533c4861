import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

export class DownloadError extends Error {}

export interface DownloadOptions {
  url: URL;
  headers: Record<string, string>;
  ca?: Buffer;
  /** The announced size: a body larger than this is cut off and refused. */
  maxBytes: number;
  timeoutMs: number;
  /** Called once after the first bytes arrived (fault injection in tests). */
  onProgress?(bytes: number): void;
}

/** Streams a URL into `file`, hashing as it goes; resolves with the size and sha256 (hex). */
export function download(file: string, o: DownloadOptions): Promise<{ size: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const mod = o.url.protocol === 'https:' ? https : http;
    const req = mod.get(o.url, { headers: o.headers, timeout: o.timeoutMs, ...(o.ca ? { ca: o.ca } : {}) }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new DownloadError(`download answered HTTP ${res.statusCode ?? '?'}`));
        return;
      }
      const hash = createHash('sha256');
      const out = fs.createWriteStream(file, { mode: 0o600 });
      let size = 0;
      let failed = false;
      const fail = (err: Error) => {
        if (failed) return;
        failed = true;
        res.destroy();
        out.destroy();
        reject(err);
      };
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > o.maxBytes) return fail(new DownloadError(`download is larger than the announced ${o.maxBytes} bytes`));
        hash.update(chunk);
        o.onProgress?.(size);
      });
      res.on('error', fail);
      out.on('error', fail);
      res.pipe(out);
      out.on('finish', () => {
        if (!failed) resolve({ size, sha256: hash.digest('hex') });
      });
    });
    req.on('timeout', () => req.destroy(new DownloadError('download timed out')));
    req.on('error', (err) => reject(err instanceof DownloadError ? err : new DownloadError(`download failed: ${err.message}`)));
  });
}
