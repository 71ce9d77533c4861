import fs from 'node:fs';
import path from 'node:path';
import express, { type RequestHandler } from 'express';

/** Cache lifetime of the console's hashed assets (web/dist/assets: Vite names each file by its content). */
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Encodings scripts/build.mjs writes next to each asset, best first. */
const ENCODINGS = [
  { name: 'br', ext: '.br' },
  { name: 'gzip', ext: '.gz' },
] as const;

/**
 * The built console (web/dist): hashed assets under /assets are cached for good and sent
 * precompressed (brotli or gzip, written by scripts/build.mjs; the console's main chunk is ~500 kB,
 * ~130 kB in brotli) when the browser accepts it; other files are cached for an hour; index.html
 * (the SPA fallback for every other non-API path) is revalidated on every load, so a new build is
 * picked up at once.
 */
export function consoleStatic(dist: string): express.Router {
  const r = express.Router();
  const assets = path.join(dist, 'assets');
  const names = new Set(fs.existsSync(assets) ? fs.readdirSync(assets) : []);
  const precompressed: RequestHandler = (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const name = req.path.slice(1);
    if (name.includes('/') || !names.has(name)) return next();
    const available = ENCODINGS.filter((e) => names.has(name + e.ext)).map((e) => e.name);
    if (available.length === 0) return next();
    res.setHeader('Vary', 'Accept-Encoding');
    // Ours first (brotli is smaller), not the header's order (browsers list gzip before br).
    const enc = available.find((e) => req.acceptsEncodings(e) === e);
    if (!enc) return next();
    res.setHeader('Content-Encoding', enc);
    res.type(path.extname(name));
    res.sendFile(name + ENCODINGS.find((e) => e.name === enc)!.ext, { root: assets, headers: { 'Cache-Control': IMMUTABLE } }, (err) => {
      if (err) next(err);
    });
  };
  r.use('/assets', precompressed, express.static(assets, { index: false, setHeaders: (res) => res.setHeader('Cache-Control', IMMUTABLE) }));
  r.use(express.static(dist, { index: false, maxAge: '1h' }));
  // SPA fallback: any non-API GET serves the console.
  r.get(/^\/(?!api\/|ws\/).*/, (_req, res) => void res.sendFile(path.join(dist, 'index.html'), { headers: { 'Cache-Control': 'no-cache' } }));
  return r;
}
