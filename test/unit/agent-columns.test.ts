import { describe, expect, it } from 'vitest';
import { columnsKey, normalizeColumns, parseColumnChoice } from '../../web/src/features/agents/columns.js';

const ALL = ['status', 'name', 'hostname', 'ip', 'os', 'labels'];
const DEFAULTS = ['status', 'name', 'ip', 'labels'];

describe('agents table column choice', () => {
  it('is kept under a key naming the user', () => {
    expect(columnsKey({ id: 3, username: 'ann' })).toBe('muster.agents.columns.3.ann');
    expect(columnsKey({ id: 4, username: 'bob' })).not.toBe(columnsKey({ id: 3, username: 'ann' }));
  });

  it('reads a stored choice in table order, always with the name column', () => {
    expect(parseColumnChoice(JSON.stringify(['labels', 'hostname', 'status']), ALL, DEFAULTS)).toEqual(['status', 'name', 'hostname', 'labels']);
    expect(parseColumnChoice(JSON.stringify(['name']), ALL, DEFAULTS)).toEqual(['name']);
  });

  it('falls back to the defaults for nothing stored, garbage, or only unknown columns', () => {
    for (const raw of [null, '', '{', '42', '{"a":1}', JSON.stringify(['gone', 7]), JSON.stringify([])]) {
      expect(parseColumnChoice(raw, ALL, DEFAULTS), String(raw)).toEqual(DEFAULTS);
    }
  });

  it('drops unknown keys and adds the required ones when setting', () => {
    expect(normalizeColumns(['os', 'gone'], ALL)).toEqual(['name', 'os']);
    expect(normalizeColumns([], ALL)).toEqual(['name']);
  });
});
