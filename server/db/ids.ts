import { randomFillSync } from 'node:crypto';

/**
 * Time-ordered UUIDs (RFC 9562 version 7) for rows written in bulk: a task's executions (tasks
 * keep random ids: they are named by short id prefixes, which time-ordered ids made in the same
 * minute would share).
 *
 * A primary key of random UUIDs (version 4) puts each new row at a random place in the table's
 * clustered index (InnoDB stores rows in primary-key order): a 10,000-host task's execution rows
 * landed on as many scattered pages. Ids that grow with time land together at the end. Measured on
 * MariaDB (a table growing to 160,000 executions, 10,000 rows per task): 172–233 against 369–391 ms
 * of the database's CPU to create a task's rows; their later updates and output rows cost the same.
 *
 * Layout: 48 bits of Unix time in ms, the version (7), a 12-bit counter that orders ids made in
 * the same millisecond (it starts at a random value up to 2,047 each millisecond and moves the
 * time on by 1 ms when it runs out), the variant, then 62 random bits. Ids made by one process
 * increase strictly, even if the clock steps back; across processes they are ordered to the ms.
 * They are as unique as version 4 ones in practice (62 random bits per id and ms) but are not
 * secrets (the time they were made can be read from them), as no id of this kind is.
 */
export function uuidv7(): string {
  const now = Date.now();
  if (now > state.ms) {
    state.ms = now;
    state.counter = pool.readUInt16BE(draw(2)) & 0x7ff;
  } else if (++state.counter > 0xfff) {
    state.ms++;
    state.counter = 0;
  }
  const b = out;
  const ms = state.ms;
  // 48-bit big-endian time (two writes: bitwise operators work on 32 bits).
  b.writeUInt16BE(Math.floor(ms / 2 ** 32) & 0xffff, 0);
  b.writeUInt32BE(ms >>> 0, 2);
  b[6] = 0x70 | (state.counter >>> 8);
  b[7] = state.counter & 0xff;
  const at = draw(8);
  pool.copy(b, 8, at, at + 8);
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const state = { ms: 0, counter: 0 };
const out = Buffer.alloc(16);
/** Random bytes are drawn from the OS 4 KiB at a time (one call per id costs more than the rest of the id). */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;

/** The offset in `pool` of `n` fresh random bytes (refilled from the OS when it runs out). */
function draw(n: number): number {
  if (poolAt + n > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += n;
  return poolAt - n;
}
