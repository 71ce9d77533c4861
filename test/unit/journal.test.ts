import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Journal } from '../../agent/executor/journal.js';

describe('execution journal', () => {
  it('remembers ids across reopen (an agent restart) and refuses repeats', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'journal-'));
    const j = new Journal(dir);
    expect(j.add('e1')).toBe(true);
    expect(j.add('e1')).toBe(false);
    expect(j.add('e2')).toBe(true);
    j.close();
    const j2 = new Journal(dir);
    expect(j2.has('e1')).toBe(true);
    expect(j2.has('e2')).toBe(true);
    expect(j2.add('e2')).toBe(false);
    expect(j2.has('e3')).toBe(false);
    j2.close();
    expect((fs.statSync(path.join(dir, 'exec-journal')).mode & 0o777).toString(8)).toBe('600');
    fs.rmSync(dir, { recursive: true });
  });

  it('compacts to the newest ids', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'journal-'));
    const j = new Journal(dir, 10);
    for (let i = 0; i < 25; i++) j.add(`e${i}`);
    j.close();
    const j2 = new Journal(dir, 10);
    expect(j2.has('e24')).toBe(true);
    expect(j2.has('e15')).toBe(true);
    expect(j2.has('e0')).toBe(false);
    j2.close();
    expect(fs.readFileSync(path.join(dir, 'exec-journal'), 'utf8').trim().split('\n').length).toBeLessThanOrEqual(20);
    fs.rmSync(dir, { recursive: true });
  });
});
