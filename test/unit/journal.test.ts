import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Journal } from '../../agent/executor/journal.js';
import { ResultStore } from '../../agent/executor/results.js';

describe('execution journal', () => {
  it('remembers ids across reopen (an agent restart) and refuses repeats', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'journal-'));
    const j = new Journal(dir, 50_000);
    expect(j.add('e1')).toBe(true);
    expect(j.add('e1')).toBe(false);
    expect(j.add('e2')).toBe(true);
    j.close();
    const j2 = new Journal(dir, 50_000);
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

describe('result journal', () => {
  it('keeps finished results with their output bytes across reopen until removed; drops half-written and corrupt files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'results-'));
    const store = new ResultStore(dir);
    const bytes = Buffer.from([0, 1, 2, 255, 10, 13]);
    store.save({
      executionId: '../../etc/passwd',
      taskId: 't1',
      status: 'cancelled',
      exitCode: null,
      signal: 'SIGTERM',
      startedAt: 1,
      finishedAt: 2,
      reason: 'agent stopping',
      truncated: false,
      seq: 5,
      chunks: [
        { seq: 3, stream: 'stdout', data: bytes },
        { seq: 4, stream: 'stderr', data: Buffer.from('e\n') },
      ],
    });
    fs.writeFileSync(path.join(store.dir, 'x.result.tmp'), 'half');
    fs.writeFileSync(path.join(store.dir, 'bad.result'), '{"v":1,"executionId":"b","chunks":[[0,1,99]]}\nshort');
    const bad: string[] = [];
    const [r, ...rest] = new ResultStore(dir).loadAll((f) => bad.push(path.basename(f)));
    expect(rest).toEqual([]);
    expect(bad).toEqual(['bad.result']);
    expect(r).toMatchObject({ executionId: '../../etc/passwd', status: 'cancelled', reason: 'agent stopping', seq: 5, truncated: false });
    expect(r!.chunks.map((c) => [c.seq, c.stream, Buffer.compare(c.data, c.seq === 3 ? bytes : Buffer.from('e\n'))])).toEqual([
      [3, 'stdout', 0],
      [4, 'stderr', 0],
    ]);
    expect(fs.readdirSync(store.dir)).toHaveLength(1);
    expect((fs.statSync(path.join(store.dir, fs.readdirSync(store.dir)[0]!)).mode & 0o777).toString(8)).toBe('600');
    store.remove('../../etc/passwd');
    expect(store.loadAll(() => {})).toEqual([]);
    fs.rmSync(dir, { recursive: true });
  });
});
