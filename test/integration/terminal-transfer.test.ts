/**
 * File transfer through a terminal session's agent (REST ↔ server ↔ real agent ↔ the shell's
 * current directory): uploads land in the shell's cwd with their bytes (chunked, flow-controlled,
 * never overwriting), downloads return the bytes, the size limit (MUSTER_TERMINAL_TRANSFER_MAX_BYTES)
 * and the host policy's allowedPaths are enforced with clear messages, only the session's operator
 * may transfer, and every transfer is audited with path, size and sha256.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, agentId, cleanup, startAgent, startServer, tmpDir, type TestServer } from '../helpers/harness.js';
import { TermClient, type TermView } from '../helpers/terminal-client.js';

const MAX = 1_000_000;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const octet = { 'content-type': 'application/octet-stream' };

describe('terminal file transfer', () => {
  let s: TestServer;
  let admin: Api;
  let op: Api;
  let id: string;
  let inside: string;
  let outside: string;
  let term: TermView;
  let client: TermClient;

  beforeAll(async () => {
    s = await startServer({ env: { MUSTER_TERMINAL_TRANSFER_MAX_BYTES: String(MAX) } });
    admin = await Api.login(s.url);
    op = await admin.userWithRole('operator', 'xfer-op');
    inside = fs.realpathSync(tmpDir('xfer-inside'));
    outside = fs.realpathSync(tmpDir('xfer-outside'));
    const policy = path.join(tmpDir('xfer-policy'), 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ allowedPaths: [inside] }), { mode: 0o600 });
    const a = startAgent(s, { name: 'xfer-1', args: ['--policy', policy] });
    id = await agentId(a);
    await admin.waitAgent(id, 'online');
    client = await TermClient.connect(s, op);
    term = await client.open(id);
    expect((await term.run(`cd '${inside}' && pwd`)).trim()).toBe(inside);
  });
  afterAll(async () => {
    client?.close();
    await cleanup();
  });

  const upload = (api: Api, name: string, body: Uint8Array) =>
    api.req('POST', `/api/terminals/${term.sessionId}/upload?name=${encodeURIComponent(name)}`, body, octet);
  const download = async (api: Api, p: string) => {
    const r = await fetch(`${s.url}/api/terminals/${term.sessionId}/download?path=${encodeURIComponent(p)}`, { headers: { cookie: api.cookie } });
    return { status: r.status, headers: r.headers, bytes: new Uint8Array(await r.arrayBuffer()) };
  };

  it("uploads into the shell's current directory, chunked, and never overwrites", async () => {
    const small = new TextEncoder().encode('hello from muster\n');
    const r = await upload(op, 'hello.txt', small);
    expect(r.status).toBe(201);
    expect(r.body).toEqual({ sessionId: term.sessionId, path: path.join(inside, 'hello.txt'), size: small.length, sha256: sha(small) });
    expect(fs.readFileSync(path.join(inside, 'hello.txt'), 'utf8')).toBe('hello from muster\n');
    // The shell sees it where it stands.
    expect(await term.run('cat hello.txt')).toContain('hello from muster');

    // Many FILE_DATA frames (64 KiB chunks, windowed by the agent's acks).
    const big = randomBytes(900_000);
    const rb = await upload(op, 'big.bin', big);
    expect(rb.status).toBe(201);
    expect(rb.body.sha256).toBe(sha(big));
    expect(sha(fs.readFileSync(path.join(inside, 'big.bin')))).toBe(sha(big));

    const again = await upload(op, 'hello.txt', new TextEncoder().encode('other bytes'));
    expect(again.status).toBe(409);
    expect(again.body.error.message).toMatch(/already exists; nothing was overwritten/);
    expect(fs.readFileSync(path.join(inside, 'hello.txt'), 'utf8')).toBe('hello from muster\n');
    expect((await upload(op, '../escape.txt', small)).status).toBe(400);
    // No temp file left behind.
    expect(fs.readdirSync(inside).filter((f) => f.includes('.muster-'))).toEqual([]);
  });

  it('refuses an upload over MUSTER_TERMINAL_TRANSFER_MAX_BYTES before it reaches the agent', async () => {
    const r = await upload(op, 'too-big.bin', new Uint8Array(MAX + 1));
    expect(r.status).toBe(413);
    expect(r.body.error.message).toContain('MUSTER_TERMINAL_TRANSFER_MAX_BYTES');
    expect(fs.existsSync(path.join(inside, 'too-big.bin'))).toBe(false);
  });

  it('downloads a path relative to the cwd or absolute, with its bytes; too large is refused', async () => {
    const d = await download(op, 'hello.txt');
    expect(d.status).toBe(200);
    expect(new TextDecoder().decode(d.bytes)).toBe('hello from muster\n');
    expect(decodeURI(d.headers.get('x-muster-path')!)).toBe(path.join(inside, 'hello.txt'));
    expect(d.headers.get('content-disposition')).toContain('hello.txt');
    const big = fs.readFileSync(path.join(inside, 'big.bin'));
    const db = await download(op, path.join(inside, 'big.bin'));
    expect(db.status).toBe(200);
    expect(sha(db.bytes)).toBe(sha(big));

    fs.writeFileSync(path.join(inside, 'huge.bin'), Buffer.alloc(MAX + 10));
    const h = await download(op, 'huge.bin');
    expect(h.status).toBe(413);
    expect(new TextDecoder().decode(h.bytes)).toMatch(/at most 1000000 \(MUSTER_TERMINAL_TRANSFER_MAX_BYTES\)/);
    expect((await download(op, 'no-such-file')).status).toBe(404);
  });

  it('applies the host policy: outside allowedPaths is refused both ways with the reason', async () => {
    fs.writeFileSync(path.join(outside, 'secret.txt'), 'not for you');
    const d = await download(op, path.join(outside, 'secret.txt'));
    expect(d.status).toBe(403);
    const err = JSON.parse(new TextDecoder().decode(d.bytes));
    expect(err.error.code).toBe('policy_denied');
    expect(err.error.message).toMatch(/outside the host policy's allowedPaths/);
    // A link inside the allowed directory does not carry a read out of it.
    fs.symlinkSync(path.join(outside, 'secret.txt'), path.join(inside, 'link.txt'));
    expect((await download(op, 'link.txt')).status).toBe(403);

    expect((await term.run(`cd '${outside}' && pwd`)).trim()).toBe(outside);
    const u = await upload(op, 'dropped.txt', new TextEncoder().encode('x'));
    expect(u.status).toBe(403);
    expect(u.body.error.code).toBe('policy_denied');
    expect(u.body.error.message).toContain(`${path.join(outside, 'dropped.txt')} is outside the host policy's allowedPaths`);
    expect(fs.existsSync(path.join(outside, 'dropped.txt'))).toBe(false);
    await term.run(`cd '${inside}'`);
  });

  it('only the operator who opened the session may transfer; viewers cannot', async () => {
    const other = await admin.userWithRole('operator');
    expect((await upload(other, 'x.txt', new Uint8Array(1))).status).toBe(403);
    expect((await download(other, 'hello.txt')).status).toBe(403);
    const viewer = await admin.userWithRole('viewer');
    expect((await upload(viewer, 'x.txt', new Uint8Array(1))).status).toBe(403);
    expect((await download(viewer, 'hello.txt')).status).toBe(403);
    expect(fs.existsSync(path.join(inside, 'x.txt'))).toBe(false);
  });

  it('audits every transfer with path, size and sha256, and the refusals with their code', async () => {
    const up = (await admin.get('/api/audit?action=terminal.upload&limit=100')).body.items;
    const hello = up.find((e: any) => e.ok && e.details.path === path.join(inside, 'hello.txt'));
    expect(hello).toMatchObject({ actor: 'xfer-op', targetType: 'terminal', targetId: term.sessionId });
    expect(hello.details).toMatchObject({ agentId: id, size: 18, sha256: sha(new TextEncoder().encode('hello from muster\n')) });
    expect(up.some((e: any) => !e.ok && e.details.code === 'policy_denied')).toBe(true);
    expect(up.some((e: any) => !e.ok && e.details.code === 'conflict')).toBe(true);
    expect(up.some((e: any) => !e.ok && e.details.why === 'payload_too_large')).toBe(true);
    const down = (await admin.get('/api/audit?action=terminal.download&limit=100')).body.items;
    const big = down.find((e: any) => e.ok && e.details.path === path.join(inside, 'big.bin'));
    expect(big.details).toMatchObject({ size: 900_000, sha256: sha(fs.readFileSync(path.join(inside, 'big.bin'))) });
    expect(down.some((e: any) => !e.ok && e.details.code === 'policy_denied')).toBe(true);
    expect(down.some((e: any) => !e.ok && e.details.code === 'payload_too_large')).toBe(true);
  });
});
