/**
 * /api/docs: the page and its renderer's assets are served by the server itself (no CDN), work
 * under the Content-Security-Policy (no inline script), and render the whole document in Chromium.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, startServer, type TestServer } from '../helpers/harness.js';
import { browserAvailable, launch, newPage } from './browser.js';

let server: TestServer;

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await cleanup();
});

describe('/api/docs over HTTP', () => {
  it('serves the page and its assets without sign-in, with no inline script', async () => {
    const page = await fetch(`${server.url}/api/docs`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await page.text();
    const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBe(2);
    for (const s of scripts) {
      expect(s[1]).toMatch(/src="\/api\/docs\/[a-z-]+\.js"/);
      expect(s[2]!.trim()).toBe('');
    }
    const want: Record<string, RegExp> = {
      'swagger-ui-bundle.js': /javascript/,
      'swagger-ui.css': /^text\/css/,
      'init.js': /javascript/,
      'favicon-32x32.png': /^image\/png/,
    };
    for (const [name, type] of Object.entries(want)) {
      const r = await fetch(`${server.url}/api/docs/${name}`);
      expect(r.status, name).toBe(200);
      expect(r.headers.get('content-type'), name).toMatch(type);
      expect((await r.arrayBuffer()).byteLength, name).toBeGreaterThan(name.endsWith('.js') || name.endsWith('.css') ? 100 : 50);
    }
    expect(await (await fetch(`${server.url}/api/docs/init.js`)).text()).toContain("url: '/api/openapi.json'");
    // Only the renderer's own files: nothing else of the package or the file system.
    for (const p of ['package.json', 'index.html', '..%2Fpackage.json', 'swagger-ui-bundle.js.map']) {
      const r = await fetch(`${server.url}/api/docs/${p}`);
      expect(r.status, p).toBe(404);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('not_found');
    }
    const doc = await fetch(`${server.url}/api/openapi.json`);
    expect(doc.status).toBe(200);
  });
});

describe.runIf(browserAvailable())('/api/docs in Chromium', () => {
  it('renders every operation of the document under the strict CSP', async () => {
    const doc = (await (await fetch(`${server.url}/api/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    const operations = Object.values(doc.paths).reduce((n, item) => n + Object.keys(item).length, 0);
    const browser = await launch();
    try {
      const page = await newPage(browser);
      const failed: string[] = [];
      page.on('requestfailed', (r) => failed.push(`${r.url()} ${r.failure()?.errorText ?? ''}`));
      page.on('response', (r) => {
        if (r.status() >= 400) failed.push(`${r.url()} ${r.status()}`);
      });
      const foreign: string[] = [];
      page.on('request', (r) => {
        if (!r.url().startsWith(server.url) && !r.url().startsWith('data:')) foreign.push(r.url());
      });
      await page.goto(`${server.url}/api/docs`);
      await page.waitForSelector('.swagger-ui .info .title');
      expect(await page.textContent('.swagger-ui .info .title')).toContain('Muster API');
      await page.waitForFunction(
        (n) => (globalThis as unknown as { document: { querySelectorAll(s: string): { length: number } } }).document.querySelectorAll('.opblock').length >= n,
        operations,
      );
      expect(await page.locator('.opblock').count()).toBe(operations);
      // Open one operation: its parameters and the role extension's text render.
      await page.click('#operations-agents-getAgents .opblock-summary');
      await page.waitForSelector('#operations-agents-getAgents .parameters');
      expect(await page.textContent('#operations-agents-getAgents')).toContain('selector');
      expect(page.problems, 'page errors or CSP violations').toEqual([]);
      expect(failed).toEqual([]);
      expect(foreign, 'requests to other origins').toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
