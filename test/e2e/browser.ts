/**
 * Real-browser helpers for the console e2e tests: Debian's Chromium driven by playwright-core.
 * Without Chromium the suites skip loudly; with CI=true a missing Chromium fails.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { ADMIN_PASSWORD, ROOT } from '../helpers/harness.js';

export const CHROMIUM = process.env['MUSTER_CHROMIUM'] ?? '/usr/bin/chromium';
/**
 * Where screenshots go: docs/screenshots (committed, shown in the README) only when
 * MUSTER_UPDATE_SCREENSHOTS=1, so ordinary test runs do not rewrite tracked images; else test/.tmp.
 */
export const SCREENSHOTS =
  process.env['MUSTER_UPDATE_SCREENSHOTS'] === '1' ? path.join(ROOT, 'docs', 'screenshots') : path.join(ROOT, 'test', '.tmp', 'screenshots');
const WEB_DIST = path.join(ROOT, 'web', 'dist', 'index.html');

/** Whether the browser suites can run; throws under CI=true when Chromium or the built console is missing. */
export function browserAvailable(): boolean {
  const problems: string[] = [];
  if (!fs.existsSync(CHROMIUM)) problems.push(`Chromium not found at ${CHROMIUM} (apt-get install chromium)`);
  if (!fs.existsSync(WEB_DIST)) problems.push('the console is not built (node scripts/build.mjs)');
  if (problems.length === 0) return true;
  if (process.env['CI'] === 'true') throw new Error(`CI=true but ${problems.join('; ')}`);
  process.stderr.write(`\n!!! Browser e2e tests SKIPPED: ${problems.join('; ')} !!!\n\n`);
  return false;
}

/** Launches headless Chromium. */
export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-dev-shm-usage'],
  });
}

/** A new page (own context, so own cookies) that records page errors and alert() calls. */
export async function newPage(browser: Browser, width = 1400, height = 860): Promise<Page & { problems: string[] }> {
  const ctx = await browser.newContext({ viewport: { width, height } });
  ctx.setDefaultTimeout(STEP_MS);
  const page = (await ctx.newPage()) as Page & { problems: string[] };
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`pageerror: ${e.message}`));
  // Content-Security-Policy violations are reported on the console: any one fails the test.
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to (load|execute|apply|connect|frame)/i.test(m.text())) page.problems.push(`csp: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    page.problems.push(`dialog: ${d.type()} ${d.message()}`);
    void d.dismiss();
  });
  return page;
}

/** Signs in through the login form and waits for the shell. */
export async function signIn(page: Page, baseUrl: string, username = 'admin', password = ADMIN_PASSWORD, pathAfter = '/'): Promise<void> {
  await page.goto(`${baseUrl}${pathAfter}`);
  await page.waitForSelector('input[name=username]');
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('[data-test=login-submit]');
  await page.waitForSelector('[data-test=whoami]');
  await page.waitForSelector('[data-test=socket-state]:has-text("live")');
}

/** Saves a screenshot of a main view as <name>.png in SCREENSHOTS, once no CSS transition runs (a theme switch fades colours). */
export async function screenshot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  await page.waitForFunction(() =>
    (globalThis as unknown as { document: { getAnimations(): Array<{ constructor: { name: string }; playState: string }> } }).document
      .getAnimations()
      .every((a) => a.constructor.name !== 'CSSTransition' || a.playState !== 'running'),
  );
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** Row of the agents table for an agent id. */
export const agentRow = (id: string) => `[data-test=agent-row][data-agent-id="${id}"]`;

/**
 * Text of an element for polling inside waitFor: a short wait per try (playwright's own default of
 * 30 s would outlast waitFor's deadline on a single try when the element is briefly absent).
 */
export const textOf = (page: Page, selector: string): Promise<string | null> => page.textContent(selector, { timeout: 2_000 });

/** How long an e2e step may take on a loaded machine before it fails. */
export const STEP_MS = 60_000;
