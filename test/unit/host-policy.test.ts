import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { execDenial, pathAllowed, terminalDenial } from '../../protocol/index.js';
import { loadPolicy } from '../../agent/policy.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'policy-unit-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(content: unknown, mode = 0o600): string {
  const f = path.join(dir, `p${n++}.json`);
  fs.writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content));
  fs.chmodSync(f, mode);
  return f;
}

describe('pathAllowed', () => {
  it('matches whole path segments after normalising . and ..', () => {
    const allowed = ['/etc/app', '/srv/data/'];
    expect(pathAllowed(allowed, '/etc/app')).toBe(true);
    expect(pathAllowed(allowed, '/etc/app/conf.d/x.conf')).toBe(true);
    expect(pathAllowed(allowed, '/srv/data/a')).toBe(true);
    expect(pathAllowed(allowed, '/etc/application')).toBe(false);
    expect(pathAllowed(allowed, '/etc/app/../shadow')).toBe(false);
    expect(pathAllowed(allowed, '/etc/./app/./x')).toBe(true);
    expect(pathAllowed(allowed, 'etc/app/x')).toBe(false);
    expect(pathAllowed(allowed, '/etc/app/x\0')).toBe(false);
    expect(pathAllowed(null, '/anything')).toBe(true);
    expect(pathAllowed([], '/anything')).toBe(false);
    expect(pathAllowed(['/'], '/anything')).toBe(true);
  });
});

describe('loadPolicy', () => {
  it('missing file: the default policy allows everything', () => {
    const p = loadPolicy(path.join(dir, 'absent.json'));
    expect(p.view).toMatchObject({ source: 'default', terminals: true, exec: true, interpreters: null, runAs: null });
    expect(execDenial(p.view, 'python3', false)).toBeNull();
    expect(terminalDenial(p.view)).toBeNull();
  });

  it('a valid file is applied', () => {
    const p = loadPolicy(file({ terminals: false, interpreters: ['bash'], runAs: 'ops', allowedPaths: ['/etc/app'] }));
    expect(p.view).toMatchObject({ source: 'file', terminals: false, exec: true, interpreters: ['bash'], runAs: 'ops', allowedPaths: ['/etc/app'] });
    expect(terminalDenial(p.view)).toMatch(/disabled/);
    expect(execDenial(p.view, 'sh', false)).toMatch(/not allowed/);
  });

  it.each([
    ['group-writable', { exec: true }, 0o620, /group- or world-writable/],
    ['world-writable', { exec: true }, 0o606, /group- or world-writable/],
    ['not JSON', '{ terminals: false', 0o600, /not valid JSON/],
    ['unknown key', { termnials: false }, 0o600, /Unrecognized key/i],
    ['signing without keys', { requireSignedScripts: true }, 0o600, /needs at least one key/],
    ['a bad key', { requireSignedScripts: true, scriptPublicKeys: ['AAAA'] }, 0o600, /scriptPublicKeys\.0/],
    ['a relative allowed path', { allowedPaths: ['etc'] }, 0o600, /absolute/],
  ])('%s: ignored, and the host locks down', (_what, content, mode, why) => {
    const p = loadPolicy(file(content, mode));
    expect(p.view.source).toBe('lockdown');
    expect(p.view.error).toMatch(why);
    expect(execDenial(p.view, 'bash', true)).toMatch(/locked down/);
    expect(terminalDenial(p.view)).toMatch(/locked down/);
  });

  it('a file owned by another user is ignored', () => {
    const f = file({ exec: true });
    if (process.getuid?.() !== 0) return; // only root can give a file away
    fs.chownSync(f, 65534, 65534);
    expect(loadPolicy(f).view.error).toMatch(/owned by uid 65534/);
  });
});
