/**
 * Muster behind a real nginx running deployment/nginx/muster.conf (test ports, a self-signed
 * certificate made by openssl): the console logs in over https (Secure cookie, the forwarded
 * client address in the audit), console sockets upgrade through it, an agent with --ca-file
 * connects through it, a task streams through it (`muster exec`), a terminal works through it
 * (`muster term` in a real TTY), and an agent package larger than nginx's default body limit
 * uploads. Mandatory with CI=true (Debian `nginx`); skipped with a loud message otherwise.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import * as pty from 'node-pty';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, agentId, Api, cleanup, freePort, ROOT, startAgent, startServer, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';

function which(cmd: string): string | null {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin', ...(process.env['PATH'] ?? '').split(':')]) {
    const p = path.join(dir, cmd);
    if (fs.existsSync(p)) return p;
  }
  return null;
}

const NGINX = which('nginx');
if (!NGINX) {
  if (process.env['CI'] === 'true') throw new Error('CI=true but nginx is not installed (apt-get install nginx)');
  console.warn('\n*** proxy.test.ts SKIPPED: nginx is not installed (apt-get install nginx) ***\n');
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

describe.skipIf(!NGINX)('Muster behind nginx (deployment/nginx/muster.conf)', () => {
  let s: TestServer;
  let nginx: ChildProcess;
  let nginxLog = '';
  let base = '';
  let ca: Buffer;
  let caFile = '';
  let cookie = '';
  let token = '';
  let dir = '';
  let httpPort = 0;

  /** A request to the proxy over https, trusting the test CA only. */
  function req(method: string, p: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<Res> {
    return new Promise((resolve, reject) => {
      const r = https.request(`${base}${p}`, { method, ca, headers: { ...(cookie ? { cookie } : {}), ...headers } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      });
      r.on('error', reject);
      r.end(body);
    });
  }

  beforeAll(async () => {
    dir = tmpDir('proxy');
    const httpsPort = await freePort();
    httpPort = await freePort();
    base = `https://localhost:${httpsPort}`;
    s = await startServer({ env: { MUSTER_PUBLIC_URL: base, MUSTER_TRUST_PROXY: 'loopback' } });

    // A self-signed certificate for localhost; agents and the CLI trust it as their CA.
    caFile = path.join(dir, 'muster.crt');
    const keyFile = path.join(dir, 'muster.key');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-keyout',
        keyFile,
        '-out',
        caFile,
      ],
      { stdio: 'ignore' },
    );
    ca = fs.readFileSync(caFile);

    // The shipped file, with only addresses, ports and paths changed.
    const conf = fs
      .readFileSync(path.join(ROOT, 'deployment', 'nginx', 'muster.conf'), 'utf8')
      .replace('server 127.0.0.1:8080;', `server 127.0.0.1:${s.port};`)
      .replace('listen 443 ssl;', `listen 127.0.0.1:${httpsPort} ssl;`)
      .replace('listen 80;', `listen 127.0.0.1:${httpPort};`)
      .replaceAll('server_name muster.example.com;', 'server_name localhost;')
      .replace('/etc/nginx/tls/muster.crt', caFile)
      .replace('/etc/nginx/tls/muster.key', keyFile);
    for (const want of [`127.0.0.1:${s.port}`, `127.0.0.1:${httpsPort} ssl`, caFile, keyFile]) expect(conf).toContain(want);
    fs.writeFileSync(path.join(dir, 'muster.conf'), conf);
    for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs']) fs.mkdirSync(path.join(dir, t));
    fs.writeFileSync(
      path.join(dir, 'nginx.conf'),
      `
${process.getuid?.() === 0 ? 'user root;' : ''}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log ${dir}/logs/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${dir}/muster.conf;
}
`,
    );
    execFileSync(NGINX!, ['-t', '-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: 'pipe' });
    nginx = spawn(NGINX!, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
    nginx.stderr!.on('data', (d: Buffer) => {
      nginxLog += d.toString();
    });
    await waitFor(async () => (await req('GET', '/healthz').catch(() => ({ status: 0 }))).status === 200, `nginx up (${nginxLog})`, 20_000);
  });

  afterAll(async () => {
    await cleanup();
    // SIGTERM is nginx's fast shutdown (SIGQUIT would wait for the long-lived sockets).
    if (nginx && nginx.exitCode === null) {
      nginx.kill('SIGTERM');
      await new Promise((r) => nginx.once('exit', r));
    }
  });

  it('the console logs in over https: Secure HttpOnly cookie, forwarded client address audited; http redirects to https', async () => {
    const r = await req('POST', '/api/auth/login', JSON.stringify({ username: 'admin', password: ADMIN_PASSWORD }), {
      'content-type': 'application/json',
      origin: base,
      'x-forwarded-for': '203.0.113.7',
    });
    expect(r.status, r.body).toBe(200);
    const set = String(r.headers['set-cookie']);
    expect(set).toMatch(/; Secure/i);
    expect(set).toMatch(/HttpOnly/i);
    expect(set).toMatch(/SameSite=Strict/i);
    cookie = set.split(';')[0]!;
    const me = await req('GET', '/api/auth/me');
    expect(JSON.parse(me.body)).toMatchObject({ user: { username: 'admin' } });
    // nginx appends the address it saw; the server trusts loopback proxies, so the left-most
    // untrusted address is the client (a proxy on the same host as its clients trusts them all).
    const audit = JSON.parse((await req('GET', '/api/audit?limit=20')).body) as { items: { action: string; ip: string | null }[] };
    expect(audit.items.find((a) => a.action === 'auth.login')?.ip).toBe('203.0.113.7');

    expect((await req('GET', '/readyz')).status).toBe(200);
    const plain = await fetch(`http://127.0.0.1:${httpPort}/api/agents`, { redirect: 'manual' });
    expect(plain.status).toBe(301);
    expect(plain.headers.get('location')).toBe('https://127.0.0.1/api/agents'); // $host, on the standard port
    const tok = await req('POST', '/api/tokens', JSON.stringify({ name: 'proxy-test' }), { 'content-type': 'application/json', origin: base });
    expect(tok.status, tok.body).toBe(201);
    token = (JSON.parse(tok.body) as { token: string }).token;
  });

  it('console sockets upgrade through the proxy (cookie + Origin); a foreign Origin is refused', async () => {
    const open = (origin: string) =>
      new Promise<{ ready?: unknown; status?: number }>((resolve, reject) => {
        const ws = new WebSocket(`${base.replace('https', 'wss')}/ws/console`, { ca, headers: { cookie, origin } });
        ws.once('message', (d) => {
          resolve({ ready: JSON.parse(d.toString()) });
          ws.close();
        });
        ws.once('unexpected-response', (_q, res) => resolve({ status: res.statusCode }));
        ws.once('error', reject);
      });
    expect((await open(base)).ready).toMatchObject({ type: 'ready', user: { username: 'admin' } });
    expect((await open('https://evil.example')).status).toBe(403);
  });

  it('an agent with --ca-file connects through the proxy; a task and a terminal work through it', async () => {
    const a = startAgent(s, { name: 'via-proxy', serverUrl: `${base.replace('https', 'wss')}`, args: ['--ca-file', caFile] });
    const id = await agentId(a);
    const api = await Api.login(s.url);
    await api.waitAgent(id, 'online', 30_000);
    const conns = (await api.get(`/api/agents/${id}/connections`)).body as { items: { remoteAddress: string | null }[] };
    expect(conns.items[0]?.remoteAddress).toBe('127.0.0.1');

    // The CLI through the proxy: REST and the console socket over TLS with the private CA.
    const bin = path.join(ROOT, 'dist', 'cli.js');
    const env = { ...process.env, MUSTER_SERVER: base, MUSTER_TOKEN: token, NODE_EXTRA_CA_CERTS: caFile, MUSTER_CLI_CONFIG: path.join(dir, 'none.json') };
    const run = spawn(process.execPath, [bin, 'exec', '--agent', 'via-proxy', '-e', 'echo through; echo the-proxy >&2; exit 0'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    run.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    run.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const code = await new Promise((r) => run.once('close', r));
    expect(code, err).toBe(0);
    expect(out).toContain('via-proxy | through\n');
    expect(out).toContain('via-proxy ! the-proxy\n');
    expect(out).toMatch(/succeeded: 1 succeeded/);

    const t = pty.spawn(process.execPath, [bin, 'term', 'via-proxy'], { name: 'xterm-256color', cols: 100, rows: 30, env: env as Record<string, string> });
    let text = '';
    t.onData((d) => {
      text += d;
    });
    const exited = new Promise<number>((r) => t.onExit(({ exitCode }) => r(exitCode)));
    await waitFor(() => /Ctrl-\] detaches/.test(text), 'terminal open', 30_000);
    t.write('echo proxied-$((20+22))\r');
    await waitFor(() => /proxied-42/.test(text), 'terminal output', 30_000);
    t.write('exit 0\r');
    expect(await exited).toBe(0);
  });

  it("an agent package larger than nginx's default 1 MiB body limit uploads through the proxy", async () => {
    const pkg = tmpDir('proxy-pkg');
    fs.writeFileSync(path.join(pkg, 'VERSION'), '9.9.9\n');
    fs.writeFileSync(path.join(pkg, 'filler.bin'), randomBytes(3 << 20)); // incompressible
    const file = path.join(tmpDir('proxy-pkgout'), 'muster-agent-9.9.9-linux-x64.tar');
    execFileSync('tar', ['-cf', file, '-C', pkg, './VERSION', './filler.bin']);
    execFileSync('gzip', ['-1', file]);
    const body = fs.readFileSync(`${file}.gz`);
    expect(body.length).toBeGreaterThan(1 << 20);
    const sig = Buffer.alloc(64, 7).toString('base64');
    const r = await req('POST', `/api/artifacts?version=9.9.9&filename=muster-agent-9.9.9-linux-x64.tar.gz&signature=${encodeURIComponent(sig)}`, body, {
      'content-type': 'application/octet-stream',
      origin: base,
    });
    expect(r.status, r.body).toBe(201);
    expect(JSON.parse(r.body)).toMatchObject({ version: '9.9.9', size: body.length });
  });
});
