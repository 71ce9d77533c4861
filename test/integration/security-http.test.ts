/**
 * HTTP defences: same-site CSRF (issue 9 defect 5), security headers on every response, the
 * proxy trust setting and the Secure cookie (defect 12), and logs without bound values (defect 11).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { randomUUID } from 'node:crypto';
import { ADMIN_PASSWORD, Api, cleanup, databases, startServer, waitFor, type TestServer } from '../helpers/harness.js';
import { agentHeaders, helloFor, withDb } from '../helpers/raw-agent.js';

const dbs = await databases();
afterAll(cleanup);

/** A raw fetch with a cookie and arbitrary headers (what a foreign page makes a browser send). */
async function raw(s: TestServer, method: string, p: string, headers: Record<string, string>, body?: string) {
  const r = await fetch(s.url + p, { method, headers, body });
  const text = await r.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: json, headers: r.headers };
}

describe('CSRF and security headers', () => {
  let s: TestServer;
  let api: Api;
  beforeAll(async () => {
    s = await startServer();
    api = await Api.login(s.url);
  });

  it('a form post with a valid cookie from another port of the same host is refused (403 cross_site)', async () => {
    const evil = `http://127.0.0.1:${s.port + 1}`;
    const form = { cookie: api.cookie, origin: evil, 'content-type': 'application/x-www-form-urlencoded' };
    const r1 = await raw(s, 'POST', '/api/auth/logout', form, '');
    expect(r1.status).toBe(403);
    expect(r1.body.error.code).toBe('cross_site');
    // Even with the JSON type (a fetch that would need a preflight), a foreign Origin is refused.
    const r2 = await raw(s, 'POST', '/api/auth/logout', { ...form, 'content-type': 'application/json' }, '{}');
    expect(r2.status).toBe(403);
    const r3 = await raw(s, 'POST', '/api/auth/logout', { cookie: api.cookie, 'sec-fetch-site': 'same-site', 'content-type': 'application/json' }, '{}');
    expect(r3.status).toBe(403);
    // A same-origin text/plain post (no Origin: not a browser fetch) still has to be JSON.
    const r4 = await raw(s, 'POST', '/api/auth/logout', { cookie: api.cookie, 'content-type': 'text/plain' }, 'x');
    expect(r4.status).toBe(403);
    const r5 = await raw(s, 'POST', '/api/auth/logout', { cookie: api.cookie }, undefined);
    expect(r5.status).toBe(403);
    // The session survived every attempt.
    expect((await api.get('/api/auth/me')).status).toBe(200);
  });

  it('same-origin JSON requests work; bearer tokens are exempt from the Origin rule', async () => {
    const ok = await raw(
      s,
      'POST',
      '/api/tokens',
      { cookie: api.cookie, origin: s.url, 'sec-fetch-site': 'same-origin', 'content-type': 'application/json' },
      JSON.stringify({ name: 'csrf-check' }),
    );
    expect(ok.status).toBe(201);
    const viaToken = await raw(
      s,
      'POST',
      '/api/tokens',
      { authorization: `Bearer ${ok.body.token}`, origin: 'http://elsewhere.example', 'content-type': 'application/json' },
      JSON.stringify({ name: 'by-token' }),
    );
    expect(viaToken.status).toBe(201);
    // A body-less DELETE (cannot be sent cross-origin without a preflight) needs no content type.
    const del = await raw(s, 'DELETE', `/api/tokens/${viaToken.body.id}`, { cookie: api.cookie, origin: s.url });
    expect(del.status).toBe(204);
  });

  it('every response carries CSP, nosniff and no-referrer (API, errors, console, 404)', async () => {
    for (const p of ['/api/auth/me', '/api/nope', '/healthz', '/', '/agents']) {
      const r = await fetch(s.url + p);
      const csp = r.headers.get('content-security-policy') ?? '';
      expect(csp, p).toContain("default-src 'self'");
      expect(csp, p).toContain("script-src 'self';");
      expect(csp, p).toContain("frame-ancestors 'none'");
      expect(csp, p).toContain("object-src 'none'");
      expect(csp, p).toContain("base-uri 'none'");
      expect(csp, p).toContain(`ws://127.0.0.1:${s.port}`);
      expect(csp, p).not.toMatch(/script-src[^;]*unsafe/);
      expect(r.headers.get('x-content-type-options'), p).toBe('nosniff');
      expect(r.headers.get('referrer-policy'), p).toBe('no-referrer');
      await r.arrayBuffer();
    }
  });
});

describe('MUSTER_TRUST_PROXY and the Secure cookie', () => {
  it('default: X-Forwarded-For is ignored in the audit and connection history; no Secure on http', async () => {
    const s = await startServer();
    const api = new Api(s.url);
    const r = await api.req('POST', '/api/auth/login', { username: 'admin', password: ADMIN_PASSWORD }, { 'x-forwarded-for': '203.0.113.9' });
    expect(r.status).toBe(200);
    expect(r.headers.get('set-cookie')).not.toMatch(/;\s*Secure/i);
    const audit = await api.get('/api/audit?action=auth.login');
    expect(audit.body.items[0].ip).not.toBe('203.0.113.9');
    const agentId = randomUUID();
    await helloWithForwarded(s, agentId, '203.0.113.9');
    const conns = await waitFor(async () => (await api.get(`/api/agents/${agentId}/connections`)).body.items?.[0], 'connection row');
    expect(conns.remoteAddress).not.toBe('203.0.113.9');
    await s.stop();
  });

  it('trusted proxy: the forwarded address is recorded for logins and socket upgrades', async () => {
    const s = await startServer({ env: { MUSTER_TRUST_PROXY: '127.0.0.1/8,::1' } });
    const api = new Api(s.url);
    await api.req('POST', '/api/auth/login', { username: 'admin', password: ADMIN_PASSWORD }, { 'x-forwarded-for': '198.51.100.1, 203.0.113.9' });
    const audit = await api.get('/api/audit?action=auth.login');
    expect(audit.body.items[0].ip).toBe('203.0.113.9');
    const agentId = randomUUID();
    await helloWithForwarded(s, agentId, '203.0.113.10');
    const conns = await waitFor(async () => (await api.get(`/api/agents/${agentId}/connections`)).body.items?.[0], 'connection row');
    expect(conns.remoteAddress).toBe('203.0.113.10');
    await s.stop();
  });

  it('an https public URL gives the session cookie Secure', async () => {
    const s = await startServer({ env: { MUSTER_PUBLIC_URL: 'https://muster.example.test' } });
    const r = await new Api(s.url).post('/api/auth/login', { username: 'admin', password: ADMIN_PASSWORD });
    expect(r.status).toBe(200);
    expect(r.headers.get('set-cookie')).toMatch(/;\s*Secure/i);
    await s.stop();
  });

  it('a bad MUSTER_TRUST_PROXY stops the server with a clear message', async () => {
    await expect(startServer({ env: { MUSTER_TRUST_PROXY: 'example.com' } })).rejects.toThrow(/MUSTER_TRUST_PROXY/);
  });
});

/** Enrolls a raw agent whose upgrade carries X-Forwarded-For; waits for welcome. */
async function helloWithForwarded(s: TestServer, agentId: string, xff: string): Promise<void> {
  const ws = new WebSocket(`${s.wsUrl}/ws/agent`, { headers: { ...agentHeaders({ agentId, enrollToken: s.enrollToken }), 'x-forwarded-for': xff } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const welcome = new Promise<void>((resolve) =>
    ws.on('message', (d) => {
      if (JSON.parse(d.toString()).type === 'welcome') resolve();
    }),
  );
  ws.send(JSON.stringify(helloFor(agentId)));
  await welcome;
  ws.close();
}

describe.each(dbs)('logs without bound values (%s)', (db) => {
  it('a database error while creating a user, opening a session or enrolling does not log the hash or secret', async () => {
    const s = await startServer({ db });
    const api = await Api.login(s.url);
    // Make the next inserts fail inside the database, the way a full disk or a constraint would.
    await withDb(s.dbUrl, async (k) => {
      for (const t of ['users', 'sessions', 'agents']) {
        if (db === 'sqlite') await k.raw(`CREATE TRIGGER fail_${t} BEFORE INSERT ON ${t} BEGIN SELECT RAISE(ABORT, 'forced failure'); END`);
        else await k.raw(`CREATE TRIGGER fail_${t} BEFORE INSERT ON ${t} FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'forced failure'`);
      }
    });
    const u = await api.post('/api/users', { username: 'victim', password: 'victim-password-1', role: 'viewer' });
    expect(u.status).toBe(500);
    const l = await new Api(s.url).post('/api/auth/login', { username: 'admin', password: ADMIN_PASSWORD });
    expect(l.status).toBe(500);
    const agentId = randomUUID();
    const ws = new WebSocket(`${s.wsUrl}/ws/agent`, { headers: agentHeaders({ agentId, enrollToken: s.enrollToken }) });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(JSON.stringify(helloFor(agentId)));
    await new Promise<void>((r) => ws.once('close', () => r()));
    await waitFor(() => (s.output().match(/forced failure/g)?.length ?? 0) >= 3, 'three logged database errors');
    const out = s.output();
    expect(out).not.toContain('scrypt$');
    expect(out).not.toMatch(/[0-9a-f]{64}/); // sha256 of a session id or agent secret
    expect(out).not.toContain(s.enrollToken);
    expect(out).toMatch(/"code":"(SQLITE_CONSTRAINT[A-Z_]*|ER_SIGNAL_EXCEPTION)"/);
    await s.stop();
    await s.drop();
  });
});
