/**
 * A terminal in the browser on a cluster behind nginx: the page is served by node B through the
 * balancer; the agent is connected to node A only. Each node has its own address under the
 * balancer (MUSTER_NODE_URL=/node/<id>, routed by nginx to that node), so the console opens the
 * terminal on a socket of node A itself: typing works, the session lives on node A, and its output
 * never crosses node B or NATS. A reload reattaches the same way. Needs nginx (Debian `nginx`),
 * MariaDB and NATS; mandatory with CI=true.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, Api, freePort, startAgent, tmpDir, waitFor } from '../helpers/harness.js';
import { startThreeNodes, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { withDb } from '../helpers/raw-agent.js';
import { browserAvailable, launch, newPage, screenshot, signIn, STEP_MS } from './browser.js';

const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx'].find((p) => fs.existsSync(p)) ?? null;
if (!NGINX) {
  if (process.env['CI'] === 'true') throw new Error('CI=true but nginx is not installed (apt-get install nginx)');
  console.warn('\n*** console-cluster-terminal.test.ts SKIPPED: nginx is not installed (apt-get install nginx) ***\n');
}

const termText = (page: Page) =>
  page.$$eval('[data-test=terminal] .xterm-rows', (els) => els.map((e) => (e as unknown as { innerText: string }).innerText).join('\n'));

describe.skipIf(!NGINX || !browserAvailable())('console on a cluster: terminals open on the node that holds the agent', () => {
  const cluster = testCluster();
  let nodes: ThreeNodes;
  let nginx: ChildProcess;
  let dir = '';
  let base = '';
  let browser: Browser;
  let id = '';
  const accessLog = () => fs.readFileSync(path.join(dir, 'access.log'), 'utf8');

  beforeAll(async () => {
    dir = tmpDir('cluster-nginx');
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    nodes = await startThreeNodes(cluster, {
      env: (node) => ({ ...cluster.env(node), MUSTER_NODE_URL: `/node/${node}`, MUSTER_PUBLIC_URL: base, MUSTER_TRUST_PROXY: 'loopback' }),
    });
    // The balancer: everything to node B (the page's node), and each node's console socket at
    // /node/<id>/ws/console (as deployment/cluster/nginx-cluster.conf does for every node).
    const proxied = `
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $muster_connection;
      proxy_buffering off;
      proxy_read_timeout 1h;`;
    const perNode = (['a', 'b', 'c'] as const)
      .map((n) => `location = /node/node-${n}/ws/console { proxy_pass http://127.0.0.1:${nodes[n].port}/ws/console; ${proxied} }`)
      .join('\n    ');
    for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(dir, t));
    fs.writeFileSync(
      path.join(dir, 'nginx.conf'),
      `
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  map $http_upgrade $muster_connection { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:${port};
    ${perNode}
    location / { proxy_pass http://127.0.0.1:${nodes.b.port}; ${proxied} }
  }
}
`,
    );
    nginx = spawn(NGINX!, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitFor(async () => (await fetch(`${base}/healthz`).catch(() => null))?.ok, 'nginx in front of node B', 20_000);
    const agent = startAgent(nodes.a, { name: 'held-by-a' });
    id = await agentId(agent);
    await (await Api.login(nodes.b.url)).waitAgent(id, 'online', 30_000);
    browser = await launch();
  }, 240_000);

  afterAll(async () => {
    await browser?.close();
    nginx?.kill();
    await nodes?.stop();
  });

  it('opens the terminal through node A itself, types, and reattaches after a reload', async () => {
    const page = await newPage(browser);
    await signIn(page, base, 'admin', undefined, `/agents/${id}`);
    await page.click('[data-test=open-terminal]');
    await page.waitForSelector('[data-test=terminal][data-state=open]');
    const sessionId = await page.getAttribute('[data-test=terminal]', 'data-session');
    expect(sessionId).toBeTruthy();
    await page.click('[data-test=terminal]');
    await page.keyboard.type('echo "node-$((40+2))"\n');
    await waitFor(async () => (await termText(page)).includes('node-42'), 'command output in the terminal', STEP_MS);
    await screenshot(page, 'cluster-terminal');

    // The session is node A's.
    const row = await withDb(nodes.db.url, (k) => k('terminal_sessions').where({ id: sessionId }).first('node'));
    expect(row).toMatchObject({ node: 'node-a' });

    await page.reload();
    await page.waitForSelector(`[data-test=terminal][data-session="${sessionId}"][data-state=open]`);
    await waitFor(async () => (await termText(page)).includes('node-42'), 'replayed scrollback after reload', STEP_MS);
    await page.click('[data-test=terminal]');
    await page.keyboard.type('echo "again-$((6*7))"\n');
    await waitFor(async () => (await termText(page)).includes('again-42'), 'output after the reattach', STEP_MS);
    await page.keyboard.type('exit\n');
    await waitFor(async () => (await termText(page)).includes('[session ended'), 'session-ended message', STEP_MS);
    expect(page.problems).toEqual([]);
    await page.context().close();
    // The page held a console socket of node A (through /node/node-a/) before and after the reload:
    // nginx logs a WebSocket when it ends. A relayed session would never have asked for one.
    const direct = () => accessLog().match(/"GET \/node\/node-a\/ws\/console HTTP\/1\.1" 101 /g) ?? [];
    await waitFor(() => direct().length >= 2, 'two sockets of node A in the access log', 20_000);
    expect(accessLog()).not.toMatch(/\/node\/node-[bc]\//);
  });
});
