import { describe, expect, it } from 'vitest';
import { DEFAULT_SCRIPTS, isDefaultScript, parseLimit, shebangMismatch } from '../../web/src/features/tasks/runDraft.js';

describe('run form logic', () => {
  it('has a default script per interpreter, and only those (or nothing) count as replaceable', () => {
    for (const i of ['bash', 'sh', 'python3', 'node', 'shebang']) expect(isDefaultScript(DEFAULT_SCRIPTS[i]!)).toBe(true);
    expect(DEFAULT_SCRIPTS['python3']).not.toBe(DEFAULT_SCRIPTS['bash']);
    expect(isDefaultScript('  \n')).toBe(true);
    expect(isDefaultScript('hostname\nuptime\nrm -f /tmp/x\n')).toBe(false);
  });

  it('names a #! line that contradicts the interpreter, and accepts matching ones', () => {
    expect(shebangMismatch('#!/usr/bin/env python3\nprint(1)', 'bash')).toMatch(/names python3, but the script runs with bash/);
    expect(shebangMismatch('#!/bin/bash\necho', 'python3')).toMatch(/names bash/);
    expect(shebangMismatch('#!/bin/sh\necho', 'bash')).toBeNull();
    expect(shebangMismatch('#!/usr/bin/python3 -u\nprint(1)', 'python3')).toBeNull();
    expect(shebangMismatch('#!/usr/bin/env node\n1', 'node')).toBeNull();
    expect(shebangMismatch('#!/usr/bin/env python3\n1', 'shebang')).toBeNull();
    expect(shebangMismatch('echo hi', 'python3')).toBeNull();
  });

  it('parses limits as a count or a percentage', () => {
    expect(parseLimit('', 'x')).toBeNull();
    expect(parseLimit(' 10 ', 'x')).toBe(10);
    expect(parseLimit('25%', 'x')).toBe('25%');
    expect(parseLimit('12.5%', 'x')).toBe('12.5%');
    expect(() => parseLimit('ten', 'concurrency')).toThrow(/concurrency must be a count/);
    expect(() => parseLimit('-1', 'x')).toThrow();
  });
});
