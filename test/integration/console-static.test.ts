/**
 * The built console as the server sends it: hashed assets precompressed (brotli, gzip) for
 * browsers that accept them and cached for good, plain for those that do not, index.html
 * revalidated on every load (issue 17: the console's cold first load).
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, ROOT, startServer, type TestServer } from '../helpers/harness.js';

const DIST = path.join(ROOT, 'web', 'dist');
const built = fs.existsSync(path.join(DIST, 'index.html'));
afterAll(cleanup);

function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      })
      .on('error', reject);
  });
}

describe.skipIf(!built && process.env['CI'] !== 'true')('console static assets', () => {
  let s: TestServer;
  let script: string;
  beforeAll(async () => {
    s = await startServer();
    const index = await get(`${s.url}/agents`);
    script = /src="\/assets\/([^"]+\.js)"/.exec(index.body.toString())![1]!;
  });

  it('serves index.html for console paths, revalidated on every load', async () => {
    const r = await get(`${s.url}/agents`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/text\/html/);
    expect(r.headers['cache-control']).toBe('no-cache');
  });

  it('sends the main chunk in brotli or gzip as accepted, the same bytes once decoded, cached for good', async () => {
    const plain = fs.readFileSync(path.join(DIST, 'assets', script));
    const br = await get(`${s.url}/assets/${script}`, { 'accept-encoding': 'gzip, deflate, br' });
    expect(br.status).toBe(200);
    expect(br.headers['content-encoding']).toBe('br');
    expect(br.headers['content-type']).toMatch(/javascript/);
    expect(br.headers['vary']).toMatch(/Accept-Encoding/i);
    expect(br.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(br.body.length).toBeLessThan(plain.length / 2);
    expect(zlib.brotliDecompressSync(br.body).equals(plain)).toBe(true);

    const gz = await get(`${s.url}/assets/${script}`, { 'accept-encoding': 'gzip' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(gz.body).equals(plain)).toBe(true);

    const none = await get(`${s.url}/assets/${script}`, { 'accept-encoding': 'identity' });
    expect(none.headers['content-encoding']).toBeUndefined();
    expect(none.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(none.body.equals(plain)).toBe(true);
  });

  it('never sends a precompressed file under its own name or outside the assets', async () => {
    const r = await get(`${s.url}/assets/${script}/../../index.html`, { 'accept-encoding': 'br' });
    expect(r.headers['content-encoding']).toBeUndefined();
    const missing = await get(`${s.url}/assets/nope-${script}`, { 'accept-encoding': 'br' });
    expect(missing.headers['content-encoding']).toBeUndefined();
  });
});
