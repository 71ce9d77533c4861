import fs from 'node:fs';
import type { Logger } from '../log.js';

/** Written bytes after which the free space is measured again (between timer ticks). */
const SAMPLE_BYTES = 256 * 1024;
/** The free space measured longer ago than this is measured again before it is relied on. */
const SAMPLE_MS = 1000;
/** How often the free space of the data dir is checked in the background. */
const CHECK_EVERY_MS = 2000;

/**
 * Free space of the data dir (SQLite file, recordings, artifacts) against a reserve. Bulk writers
 * that can stop without harm (terminal recordings) ask `allow(bytes)` before each write and stop
 * when the answer is no, so the reserve stays free for the database: closing sessions, audit,
 * execution results. Below the reserve, SQLite's WAL is checkpointed and truncated (`onLow`), so a
 * WAL that grew while the disk filled gives its space back. Logs once when the disk goes below
 * the reserve and once when it is above it again.
 */
export class DiskGuard {
  private free = Number.POSITIVE_INFINITY;
  private written = 0;
  private sampledAt = 0;
  private low = false;
  private timer: NodeJS.Timeout | undefined;
  private relieving: Promise<void> | null = null;

  constructor(private readonly o: { dir: string; reserveBytes: number; log: Logger; onLow?: () => Promise<void> }) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.tick(), CHECK_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Free bytes of the data dir's filesystem, as last measured minus what was written since. */
  get freeBytes(): number {
    return this.free - this.written;
  }

  /** Whether free space is below the reserve. */
  get isLow(): boolean {
    return this.low;
  }

  /** Whether `bytes` more may be written without eating into the reserve (counts them if so). */
  allow(bytes: number): boolean {
    if (this.written >= SAMPLE_BYTES || Date.now() - this.sampledAt > SAMPLE_MS) this.sample();
    if (this.free - this.written - bytes < this.o.reserveBytes) {
      this.sample(); // the estimate may be stale (space freed meanwhile): measure before refusing
      if (this.free - bytes < this.o.reserveBytes) return false;
    }
    this.written += bytes;
    return true;
  }

  private sample(): void {
    try {
      const s = fs.statfsSync(this.o.dir);
      this.free = s.bavail * s.bsize;
    } catch {
      return; // the dir is being replaced or unreadable: keep the last figure
    }
    this.written = 0;
    this.sampledAt = Date.now();
    const low = this.free < this.o.reserveBytes;
    if (low !== this.low) {
      this.low = low;
      if (low)
        this.o.log.warn(
          { dir: this.o.dir, freeBytes: this.free, reserveBytes: this.o.reserveBytes },
          'data disk below its reserve (MUSTER_DISK_RESERVE_BYTES): terminal recordings stop; writes that find no space answer 507 and are retried',
        );
      else this.o.log.info({ dir: this.o.dir, freeBytes: this.free }, 'data disk above its reserve again');
    }
  }

  private tick(): void {
    this.sample();
    if (!this.low || !this.o.onLow || this.relieving) return;
    this.relieving = this.o
      .onLow()
      .catch((err: unknown) => this.o.log.debug({ err }, 'could not relieve the data disk'))
      .finally(() => {
        this.relieving = null;
      });
  }
}
