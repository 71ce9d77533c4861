import type { Db } from './db.js';

/** Small key/value settings that must survive restarts (the generated enrollment token). */
export class Settings {
  constructor(private readonly db: Db) {}
  async get(key: string): Promise<string | null> {
    const row = await this.db('settings').where({ key }).first();
    return row ? String(row.value) : null;
  }
  async set(key: string, value: string): Promise<void> {
    const n = await this.db('settings').where({ key }).update({ value });
    if (n === 0) await this.db('settings').insert({ key, value });
  }
}
