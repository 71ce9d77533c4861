/**
 * The console e2e suites' set-up, written once: a real server, real agents (each awaited online),
 * an admin Api and one headless Chromium for the describe block, torn down after it; pages come
 * signed in. Called inside `describe`, it registers the block's beforeAll/afterAll itself.
 *
 *   const c = useConsole({ agents: [{ name: 'run-a' }] });
 *   it('…', async () => { const page = await c.signedIn('/agents'); … });
 */
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll } from 'vitest';
import {
  ADMIN_PASSWORD,
  Api,
  agentId,
  cleanup,
  startAgent,
  startServer,
  type AgentOptions,
  type ServerOptions,
  type TestAgent,
  type TestServer,
} from '../helpers/harness.js';
import { launch, newPage, signIn } from './browser.js';

/** How long each agent of a suite may take to come online (a loaded machine starts node slowly). */
export const AGENT_ONLINE_MS = 30_000;

export type E2EPage = Awaited<ReturnType<typeof newPage>>;

export interface ConsoleOptions {
  /** The server's options, or a function that prepares them (e.g. seeds a database first). */
  server?: ServerOptions | (() => Promise<ServerOptions>);
  /** Agents started against the server, in this order (`ids` keeps it); a function runs in beforeAll. */
  agents?: AgentOptions[] | (() => AgentOptions[]);
  /** Runs once the agents are online, before the browser starts (uploads, simulated agents, …). */
  setup?: (c: ConsoleSuite) => Promise<void>;
  /** Runs before the browser closes and the processes stop (undoes what `setup` started). */
  beforeStop?: () => unknown;
  /** Runs once the browser and every process are gone (removes what they used). */
  afterStop?: () => unknown;
  /** The set-up's own deadline (vitest's hookTimeout otherwise). */
  timeoutMs?: number;
}

export interface ConsoleSuite {
  readonly server: TestServer;
  readonly api: Api;
  readonly browser: Browser;
  /** The agents started for the suite and their ids, in the order given. */
  readonly agents: readonly TestAgent[];
  readonly ids: readonly string[];
  /** The first agent's id (most suites start one). */
  readonly id: string;
  /** Starts the (stopped) server again on its port and data; the suite uses the new one from then on. */
  restartServer(): Promise<TestServer>;
  /** A new page in its own context (own cookies), recording page errors, CSP reports and dialogs. */
  page(width?: number, height?: number): Promise<E2EPage>;
  /** A new page signed in through the login form, opened at `path`. */
  signedIn(path?: string, user?: { username: string; password: string }, size?: { width: number; height: number }): Promise<E2EPage>;
}

/** Registers the suite's set-up and teardown; the returned object is usable from the tests on. */
export function useConsole(opts: ConsoleOptions = {}): ConsoleSuite {
  let server: TestServer | undefined;
  let api: Api | undefined;
  let browser: Browser | undefined;
  const agents: TestAgent[] = [];
  const ids: string[] = [];
  const ready = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`e2e fixture: ${what} is not started yet (use it inside a test or after the set-up)`);
    return v;
  };
  const suite: ConsoleSuite = {
    get server() {
      return ready(server, 'the server');
    },
    get api() {
      return ready(api, 'the admin Api');
    },
    get browser() {
      return ready(browser, 'the browser');
    },
    agents,
    ids,
    get id() {
      return ready(ids[0], 'an agent');
    },
    async restartServer() {
      server = await suite.server.restart();
      return server;
    },
    page: (width, height) => newPage(suite.browser, width, height),
    async signedIn(path = '/', user = { username: 'admin', password: ADMIN_PASSWORD }, size) {
      const page = await newPage(suite.browser, size?.width, size?.height);
      await signIn(page, suite.server.url, user.username, user.password, path);
      return page;
    },
  };

  beforeAll(async () => {
    server = await startServer(typeof opts.server === 'function' ? await opts.server() : opts.server);
    api = await Api.login(server.url);
    const wanted = typeof opts.agents === 'function' ? opts.agents() : (opts.agents ?? []);
    for (const o of wanted) agents.push(startAgent(server, o));
    for (const a of agents) ids.push(await agentId(a));
    for (const id of ids) await api.waitAgent(id, 'online', AGENT_ONLINE_MS);
    await opts.setup?.(suite);
    browser = await launch();
  }, opts.timeoutMs);
  afterAll(async () => {
    await opts.beforeStop?.();
    await browser?.close();
    await cleanup();
    await opts.afterStop?.();
  });
  return suite;
}
