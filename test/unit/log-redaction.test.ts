/** Both loggers redact credential fields at any depth, and database errors lose their bound values (issue 9, defect 11). */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { createAgentLog } from '../../agent/log.js';
import { createLogger, safeErrorSerializer } from '../../server/log.js';

const SECRETS = ['Bearer mst_abc', 'muster_session=xyz', 'hunter2-password', 'agent-secret-value', 'enrol-token-value', 'scrypt$16384$8$1$salt$hash'];
const record = {
  password: SECRETS[2],
  req: { headers: { authorization: SECRETS[0], cookie: SECRETS[1], 'x-muster-enroll-token': SECRETS[4] } },
  agent: { secret: SECRETS[3], nested: { token: SECRETS[4], password_hash: SECRETS[5] } },
  keep: 'visible',
};

describe('log redaction', () => {
  it('server logger (pino)', () => {
    let out = '';
    const sink = new Writable({ write(c, _e, cb) { out += String(c); cb(); } });
    createLogger('info', sink).info(record, 'hello');
    for (const s of SECRETS) expect(out).not.toContain(s);
    expect(out).toContain('visible');
    expect(out).toContain('[redacted]');
  });

  it('agent logger', () => {
    let out = '';
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((c) => { out += String(c); return true; });
    try {
      createAgentLog('info').info({ ...record, enrollToken: SECRETS[4], agentSecret: SECRETS[3], tokens: 3 }, 'hello');
    } finally {
      spy.mockRestore();
    }
    for (const s of SECRETS) expect(out).not.toContain(s);
    expect(out).toContain('visible');
    expect(out).toContain('"tokens":3');
  });

  it('a knex/mysql2 error keeps its code, never the query values', () => {
    const err = Object.assign(new Error("insert into `users` (`password_hash`, `username`) values ('scrypt$16384$8$1$salt$hash', 'bob') - Duplicate entry 'bob' for key 'users_username_unique'"), {
      code: 'ER_DUP_ENTRY', errno: 1062, sqlState: '23000', sqlMessage: "Duplicate entry 'bob' for key 'users_username_unique'",
      sql: "insert into `users` values ('scrypt$16384$8$1$salt$hash', 'bob')",
    });
    const s = JSON.stringify(safeErrorSerializer(err));
    expect(s).not.toContain('scrypt$');
    expect(s).not.toContain("'bob'");
    expect(s).toContain('ER_DUP_ENTRY');
    expect(s).toContain('Duplicate entry ? for key ?');
  });

  it('server log calls pass errors as `err` (the safe serializer), never stringified', () => {
    // String(err) of a knex error on SQLite is the formatted query with its values: the
    // serializer never sees it. Every log call under server/ must hand over the error itself.
    const root = path.join(__dirname, '..', '..', 'server');
    const offenders: string[] = [];
    for (const f of fs.readdirSync(root, { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts')) continue;
      fs.readFileSync(path.join(root, f), 'utf8').split('\n').forEach((line, i) => {
        if (/\.(trace|debug|info|warn|error|fatal)\(\{[^}]*\b(err|error)\s*:\s*String\(/.test(line)) offenders.push(`server/${f}:${i + 1}`);
      });
    }
    expect(offenders).toEqual([]);
  });
});

