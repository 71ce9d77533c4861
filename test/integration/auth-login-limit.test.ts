/**
 * Login rate limit (issue 9, defect 3): attempts are reserved before the password check, so
 * concurrent requests cannot bypass it; usernames have one canonical form (trimmed, lower-case),
 * so case/space variants share the limit on MariaDB (whose collation matches them) as on SQLite,
 * user creation is case-insensitively unique (409, never 500), and the audit names the canonical user.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, Api, cleanup, databases, startServer } from '../helpers/harness.js';

const dbs = await databases();
afterAll(cleanup);

const login = (url: string, username: string, password: string) =>
  fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  }).then(async (r) => ({ status: r.status, body: (await r.json().catch(() => null)) as any }));

describe.each(dbs)('login rate limit and usernames (%s)', (db) => {
  it('20 concurrent wrong passwords: at most the limit reach the password check, the rest are 429', async () => {
    const s = await startServer({ db, env: { MUSTER_LOGIN_RATE_LIMIT: '3' } });
    const admin = await Api.login(s.url);
    await admin.post('/api/users', { username: 'target', password: 'target-password-1', role: 'viewer' });
    const results = await Promise.all(Array.from({ length: 20 }, () => login(s.url, 'target', 'wrong-password')));
    const counts = results.reduce<Record<number, number>>((a, r) => ({ ...a, [r.status]: (a[r.status] ?? 0) + 1 }), {});
    expect(counts[401] ?? 0).toBeLessThanOrEqual(3);
    expect(counts[429]).toBeGreaterThanOrEqual(17);
    // Now the right password is refused too until the window passes.
    expect((await login(s.url, 'target', 'target-password-1')).status).toBe(429);
    // Successful logins do not use up the limit.
    for (let i = 0; i < 5; i++) expect((await login(s.url, 'admin', ADMIN_PASSWORD)).status).toBe(200);
    await s.stop();
    await s.drop();
  });

  it('case and space variants of a username share one limit, one user and one audit name', async () => {
    const s = await startServer({ db, env: { MUSTER_LOGIN_RATE_LIMIT: '3' } });
    const admin = await Api.login(s.url);
    for (const variant of ['Admin', 'ADMIN ', ' admin']) expect((await login(s.url, variant, 'wrong-password')).status).toBe(401);
    expect((await login(s.url, 'admin', ADMIN_PASSWORD)).status).toBe(429);
    const audit = await admin.get('/api/audit?action=auth.login');
    const failed = audit.body.items.filter((e: any) => !e.ok);
    expect(failed.length).toBeGreaterThanOrEqual(4);
    for (const e of failed) expect(e.actor).toBe('admin');

    // Creation is case-insensitively unique: 409, not a 500 or a second "admin".
    const dup = await admin.post('/api/users', { username: 'ADMIN', password: 'another-password-1', role: 'viewer' });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('conflict');
    const mixed = await admin.post('/api/users', { username: ' Ops.User ', password: 'ops-password-12', role: 'operator' });
    expect(mixed.status).toBe(201);
    expect(mixed.body.username).toBe('ops.user');
    expect((await admin.post('/api/users', { username: 'ops.user', password: 'ops-password-12', role: 'viewer' })).status).toBe(409);
    const ok = await login(s.url, 'OPS.USER', 'ops-password-12');
    expect(ok.status).toBe(200);
    expect(ok.body.user.username).toBe('ops.user');
    const users = (await admin.get('/api/users')).body.items.map((u: any) => u.username);
    expect(users.filter((u: string) => u === 'admin')).toHaveLength(1);
    await s.stop();
    await s.drop();
  });
});
