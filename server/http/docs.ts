import { createRequire } from 'node:module';
import path from 'node:path';
import type { RequestHandler } from 'express';
import { z } from 'zod';
import { ApiRouter, type RegisteredRoute } from './api-router.js';
import { openApiDocument } from './openapi.js';

declare const __MUSTER_VERSION__: string | undefined;
/** The version the document names (the build's; `0.0.0-dev` when run from source). */
export const API_VERSION: string = typeof __MUSTER_VERSION__ === 'string' ? __MUSTER_VERSION__ : '0.0.0-dev';

/** The renderer's files this server hands out (from the swagger-ui-dist package; no CDN). */
const ASSETS = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png', 'favicon-16x16.png']);

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Muster API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
`;

// A file of its own: the Content-Security-Policy allows no inline script. "Try it out" sends the
// page's session cookie (same origin), so it acts as the signed-in user; no validator badge (it
// would load an image from the renderer's public validator).
const INIT = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/api/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
});
`;

const OpenApiDocument = z
  .looseObject({ openapi: z.string(), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.unknown()) })
  .meta({ id: 'OpenApiDocument', description: 'this document' });

/**
 * GET /api/openapi.json (generated from every registered route, this router's included) and the
 * rendered docs at /api/docs. Both describe the API, not data: no sign-in needed (see the README).
 */
export function docsRoutes(routes: () => readonly RegisteredRoute[]): { api: ApiRouter; assets: RequestHandler } {
  const r = new ApiRouter();
  let doc: string | null = null;
  r.get(
    '/openapi.json',
    {
      summary: 'This API as an OpenAPI 3.1 document',
      description: 'Generated from the schemas the server validates requests with and answers in.',
      role: null,
      responses: { 200: OpenApiDocument },
    },
    (_req, res) => {
      doc ??= JSON.stringify(openApiDocument(routes(), API_VERSION));
      res.type('application/json').send(doc);
    },
  );
  r.get(
    '/docs',
    {
      summary: 'API docs page',
      description: 'The document rendered by Swagger UI, served from this server (its scripts and styles under /api/docs/).',
      role: null,
      responses: { 200: { media: 'text/html', description: 'the page' } },
    },
    (_req, res) => {
      res.type('html').send(PAGE);
    },
  );

  const dir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const assets: RequestHandler = (req, res, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    const name = req.path.replace(/^\//, '');
    if (name === 'init.js') return void res.type('text/javascript').set('Cache-Control', 'no-cache').send(INIT);
    if (!ASSETS.has(name)) return next();
    res.sendFile(name, { root: dir, maxAge: '1h' });
  };
  return { api: r, assets };
}
