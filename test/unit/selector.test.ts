import { describe, expect, it } from 'vitest';
import type { AgentRecord } from '../../server/fleet/repo.js';
import { compileGlob } from '../../server/selectors/glob.js';
import { compileSelector, SelectorError } from '../../server/selectors/selector.js';

function agent(p: Partial<AgentRecord>): AgentRecord {
  return {
    id: 'id',
    name: 'name',
    hostname: 'host',
    ips: [],
    externalIp: null,
    platform: 'linux',
    arch: 'x64',
    os: 'Debian 12',
    version: '1.2.0',
    cpus: 2,
    memoryBytes: 1,
    labels: {},
    labelOverrides: null,
    enrollLabels: null,
    groups: [],
    secretHash: '',
    createdAt: 0,
    connectedAt: null,
    lastSeenAt: null,
    revokedAt: null,
    status: 'online',
    metrics: null,
    policy: null,
    ...p,
  };
}

const fleet = [
  agent({ id: 'a1', name: 'web-01', hostname: 'web-01.example.com', labels: { role: 'web', env: 'prod' }, groups: ['canary'] }),
  agent({ id: 'a2', name: 'web-02', hostname: 'WEB-02.example.com', labels: { role: 'web', env: 'staging' }, status: 'offline' }),
  agent({ id: 'a3', name: 'db-01', hostname: 'db-01.example.com', labels: { role: 'db', env: 'prod' }, version: '1.1.0', platform: 'freebsd' }),
  agent({ id: 'a4', name: 'db-02', hostname: 'db-02.example.com', labels: { role: 'db' }, labelOverrides: { role: 'cache' } }),
];
const select = (s: string) => fleet.filter(compileSelector(s)).map((a) => a.name);

function syntaxError(s: string): SelectorError {
  try {
    compileSelector(s);
  } catch (err) {
    if (err instanceof SelectorError) return err;
    throw err;
  }
  throw new Error(`no error for ${s}`);
}

describe('selector language', () => {
  it('all, ids and names', () => {
    expect(select('all')).toEqual(['web-01', 'web-02', 'db-01', 'db-02']);
    expect(select('web-01,web-02')).toEqual(['web-01', 'web-02']);
    expect(select('a3, "db-02"')).toEqual(['db-01', 'db-02']);
    expect(select('web-01.example.com')).toEqual([]);
  });

  it('labels by dot and by bracket, with overrides winning', () => {
    expect(select('labels.role == "web"')).toEqual(['web-01', 'web-02']);
    expect(select('labels["env"] != "prod"')).toEqual(['web-02', 'db-02']);
    expect(select("labels['role'] == 'cache'")).toEqual(['db-02']);
    expect(select('labels.role == "db"')).toEqual(['db-01']);
    expect(select('"env" in labels')).toEqual(['web-01', 'web-02', 'db-01']);
  });

  it('hostname glob (case-insensitive), version, platform, status, groups', () => {
    expect(select('hostname ~ "db-*"')).toEqual(['db-01', 'db-02']);
    expect(select('hostname ~ "web-0?.example.com"')).toEqual(['web-01', 'web-02']);
    expect(select('hostname !~ "web-*"')).toEqual(['db-01', 'db-02']);
    expect(select('version == "1.1.0"')).toEqual(['db-01']);
    expect(select('platform == "linux"')).toEqual(['web-01', 'web-02', 'db-02']);
    expect(select('status == "online"')).toEqual(['web-01', 'db-01', 'db-02']);
    expect(select('"canary" in groups')).toEqual(['web-01']);
  });

  it('and binds tighter than or; not and parentheses', () => {
    expect(select('labels.role == "db" or labels.role == "web" and status == "offline"')).toEqual(['web-02', 'db-01']);
    expect(select('(labels.role == "db" or labels.role == "web") and status == "online"')).toEqual(['web-01', 'db-01']);
    expect(select('not labels.role == "web"')).toEqual(['db-01', 'db-02']);
    expect(select('not (web-01 or db-01) and not "canary" in groups')).toEqual(['web-02', 'db-02']);
    expect(select('NOT status == "offline" AND hostname ~ "web*"')).toEqual(['web-01']);
  });

  it('syntax errors name the 0-based position and what was expected', () => {
    let e = syntaxError('labels.role == web');
    expect(e.position).toBe(15);
    expect(e.expected).toBe('a quoted string');
    e = syntaxError('labels.role = "web"');
    expect(e.position).toBe(12);
    expect(e.expected).toBe('`==`');
    e = syntaxError('(status == "online"');
    expect(e.position).toBe(19);
    expect(e.expected).toBe('`)`');
    e = syntaxError('status == "online" web');
    expect(e.position).toBe(19);
    e = syntaxError('hostname ~ "db-*');
    expect(e.position).toBe(16);
    e = syntaxError('labels[role] == "x"');
    expect(e.position).toBe(7);
    expect(e.expected).toBe('a quoted label key');
    e = syntaxError('web-01,');
    expect(e.position).toBe(7);
    e = syntaxError('a and');
    expect(e.position).toBe(5);
    e = syntaxError('x $ y');
    expect(e.position).toBe(2);
    e = syntaxError('"x" in hosts');
    expect(e.position).toBe(7);
    expect(e.expected).toBe('`groups` or `labels`');
    e = syntaxError('color == "red"');
    expect(e.position).toBe(0);
    expect(e.message).toContain('position 0');
  });

  it('globs', () => {
    expect(compileGlob('db-[12]*').test('db-1x')).toBe(true);
    expect(compileGlob('db-[!12]').test('db-1')).toBe(false);
    expect(compileGlob('db-[!12]').test('db-3')).toBe(true);
    expect(compileGlob('a.b').test('axb')).toBe(false);
    expect(compileGlob('(x)+').test('(x)+')).toBe(true);
    expect(compileGlob('web-[0-9][0-9]').test('web-07')).toBe(true);
    expect(compileGlob('web-[0-9][0-9]').test('web-7a')).toBe(false);
    expect(compileGlob('WEB-*').test('web-01')).toBe(true);
    expect(compileGlob('[A-Z]*').test('db')).toBe(true);
    expect(compileGlob('*').test('')).toBe(true);
    expect(compileGlob('?').test('')).toBe(false);
    expect(compileGlob('a*b*c').test('aXbYc')).toBe(true);
    expect(compileGlob('a*b*c').test('aXbYcZ')).toBe(false);
    expect(compileGlob('*c').test('abcabc')).toBe(true);
    expect(compileGlob('[abc').test('[abc')).toBe(true);
    expect(compileGlob('é*').test('École')).toBe(true);
  });

  it('a pathological glob answers at once (no backtracking blow-up)', () => {
    // With a RegExp (`^.*.*.*…!$`) this takes longer than the age of the universe.
    const g = compileGlob(`${'*a'.repeat(60)}!`);
    expect(g.test('a'.repeat(5000))).toBe(false);
    const s = compileSelector(`id ~ "${'*'.repeat(200)}!" or hostname ~ "${'*?'.repeat(100)}!"`);
    expect(fleet.filter(s)).toEqual([]);
  });

  it('a reversed glob range is a syntax error naming its position, not a crash', () => {
    const e = syntaxError('hostname ~ "[z-a]"');
    expect(e.position).toBe(13);
    expect(e.message).toContain('position 13');
    expect(compileGlob('x[]').test('x[]')).toBe(true);
    expect(syntaxError(`labels.k ~ "ab[!]"`).position).toBe(14);
  });

  it('nesting, length and terms are bounded; deep nesting is an error with a position, not a stack overflow', () => {
    const deep = `${'('.repeat(5000)}all${')'.repeat(5000)}`;
    let e = syntaxError(deep);
    expect(e.position).toBe(32);
    expect(e.message).toMatch(/nested too deeply at position 32/);
    e = syntaxError(`${'not '.repeat(1000)}all`);
    expect(e.position).toBe(32 * 4);
    expect(select(`${'('.repeat(32)}web-01${')'.repeat(32)}`)).toEqual(['web-01']);
    e = syntaxError('x'.repeat(20_000));
    expect(e.position).toBe(16_384);
    const many = Array.from({ length: 300 }, (_, i) => `h${i}`).join(' or ');
    e = syntaxError(many);
    expect(e.message).toMatch(/too many terms/);
    expect(e.position).toBe(many.indexOf('h256'));
    const limits = { maxLength: 20, maxDepth: 2, maxTerms: 2 };
    expect(() => compileSelector('((( all )))', limits)).toThrow(SelectorError);
    expect(() => compileSelector('a or b or c', limits)).toThrow(/too many terms/);
    expect(() => compileSelector('status == "online" and version == "1"', limits)).toThrow(/too long/);
  });

  it('label lookups see own properties only', () => {
    for (const key of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      expect(select(`labels.${key} ~ "*"`)).toEqual([]);
      expect(select(`labels["${key}"] == "[object Object]"`)).toEqual([]);
      expect(select(`"${key}" in labels`)).toEqual([]);
    }
  });
});
