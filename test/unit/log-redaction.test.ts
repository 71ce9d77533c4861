/** Both loggers redact credential fields at any depth, and database errors lose their bound values (issue 9, defect 11). */
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createAgentLog } from '../../agent/log.js';
import { createLogger, safeErrorSerializer } from '../../server/log.js';

const SECRETS = ['Bearer mst_abc', 'muster_session=xyz', 'hunter2-password', 'agent-secret-value', 'enroll-token-value', 'scrypt$16384$8$1$salt$hash'];
const record = {
  password: SECRETS[2],
  req: { headers: { authorization: SECRETS[0], cookie: SECRETS[1], 'x-muster-enroll-token': SECRETS[4] } },
  agent: { secret: SECRETS[3], nested: { token: SECRETS[4], password_hash: SECRETS[5] } },
  keep: 'visible',
};

describe('log redaction', () => {
  it('server logger (pino)', () => {
    let out = '';
    const sink = new Writable({
      write(c, _e, cb) {
        out += String(c);
        cb();
      },
    });
    createLogger('info', sink).info(record, 'hello');
    for (const s of SECRETS) expect(out).not.toContain(s);
    expect(out).toContain('visible');
    expect(out).toContain('[redacted]');
  });

  it('agent logger (pino)', () => {
    let out = '';
    const sink = new Writable({
      write(c, _e, cb) {
        out += String(c);
        cb();
      },
    });
    createAgentLog('info', { agentId: 'a-1' }, sink).info({ ...record, enrollToken: SECRETS[4], agentSecret: SECRETS[3], tokens: 3 }, 'hello');
    for (const s of SECRETS) expect(out).not.toContain(s);
    expect(out).toContain('visible');
    expect(out).toContain('"tokens":3');
    expect(out).toContain('[redacted]');
  });

  it('server and agent write one line format: level by name, ISO time, svc, errors with their stack, the agent id bound', () => {
    const lines: Record<string, Record<string, unknown>> = {};
    const sink = (k: string) =>
      new Writable({
        write(c, _e, cb) {
          lines[k] = JSON.parse(String(c)) as Record<string, unknown>;
          cb();
        },
      });
    const err = new Error('boom');
    createLogger('info', sink('server')).warn({ err }, 'something failed');
    const agent = createAgentLog('info', { agentId: 'agent-7' }, sink('agent'));
    agent.warn({ err }, 'something failed');
    const s = lines['server']!;
    const a = lines['agent']!;
    for (const l of [s, a]) {
      expect(l['level']).toBe('warn');
      expect(String(l['time'])).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      expect(l['msg']).toBe('something failed');
      const e = l['err'] as Record<string, unknown>;
      expect(e['message']).toBe('boom');
      expect(String(e['stack'])).toContain('log-redaction.test.ts');
    }
    expect(s['svc']).toBe('muster-server');
    expect(a['svc']).toBe('muster-agent');
    expect(a['agentId']).toBe('agent-7');
    // Same keys apart from the agent's binding.
    expect(
      Object.keys(a)
        .filter((k) => k !== 'agentId')
        .sort(),
    ).toEqual(Object.keys(s).sort());
    // The level can be changed at run time (live agent configuration).
    agent.level = 'error';
    delete lines['agent'];
    agent.warn({}, 'not written');
    expect(lines['agent']).toBeUndefined();
  });

  it('a knex/mysql2 error keeps its code, never the query values', () => {
    const err = Object.assign(
      new Error(
        "insert into `users` (`password_hash`, `username`) values ('scrypt$16384$8$1$salt$hash', 'bob') - Duplicate entry 'bob' for key 'users_username_unique'",
      ),
      {
        code: 'ER_DUP_ENTRY',
        errno: 1062,
        sqlState: '23000',
        sqlMessage: "Duplicate entry 'bob' for key 'users_username_unique'",
        sql: "insert into `users` values ('scrypt$16384$8$1$salt$hash', 'bob')",
      },
    );
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
      fs.readFileSync(path.join(root, f), 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/\.(trace|debug|info|warn|error|fatal)\(\{[^}]*\b(err|error)\s*:\s*String\(/.test(line)) offenders.push(`server/${f}:${i + 1}`);
        });
    }
    expect(offenders).toEqual([]);
  });
});
