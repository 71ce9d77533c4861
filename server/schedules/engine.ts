import type { AuditLog } from '../auth/audit.js';
import { roleAtLeast, type AuthService } from '../auth/auth-service.js';
import { ApiError } from '../http/errors.js';
import type { Logger } from '../log.js';
import type { ScriptService } from '../scripts/service.js';
import type { Schedule, ScheduleRepo } from './repo.js';
import { timingOf } from './service.js';
import { nextAfter } from './timing.js';

export interface EngineDeps {
  repo: ScheduleRepo;
  scripts: ScriptService;
  auth: Pick<AuthService, 'userRights'>;
  audit: Pick<AuditLog, 'refused'>;
  log: Logger;
  nodeId: string;
  tickMs: number;
  misfireGraceMs: number;
  /** False while another node of the cluster holds the schedules lease (absent: always run). */
  leased?: () => boolean;
}

/** Due schedules handled per tick (the rest wait for the next tick). */
const BATCH = 100;

/**
 * Fires due schedules. Each fire is claimed in the database first (see ScheduleRepo.claim), so a
 * due time fires at most once across restarts and across server processes sharing the database;
 * the state lives in the database, never only in this process.
 */
export class ScheduleEngine {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly d: EngineDeps) {}

  async start(): Promise<void> {
    const n = await this.d.repo.settleClaims(this.d.nodeId);
    if (n.started + n.failed) this.d.log.warn(n, 'schedule fires claimed before a stop were settled');
    this.timer = setInterval(() => void this.tick(), this.d.tickMs);
    this.timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.ticking;
  }

  /** One pass over the due schedules (never two at once). */
  tick(): Promise<void> {
    if (this.ticking || this.stopped) return this.ticking ?? Promise.resolve();
    // Once in the cluster (the claim in the database would also stop a double fire; the lease saves the race).
    if (this.d.leased && !this.d.leased()) return Promise.resolve();
    this.ticking = (async () => {
      try {
        for (const s of await this.d.repo.due(Date.now(), BATCH)) {
          if (this.stopped) break;
          await this.fire(s).catch((err: unknown) => this.d.log.error({ err, scheduleId: s.id }, 'schedule fire failed'));
        }
      } catch (err) {
        this.d.log.error({ err }, 'could not read due schedules');
      } finally {
        this.ticking = null;
      }
    })();
    return this.ticking;
  }

  private async creatorRefusal(createdBy: string): Promise<string | null> {
    const u = await this.d.auth.userRights(createdBy);
    if (!u) return `the schedule's creator ${createdBy} no longer exists`;
    if (u.disabled) return `the schedule's creator ${createdBy} is disabled`;
    if (!roleAtLeast(u.role, 'operator')) return `the schedule's creator ${createdBy} is now ${u.role}; running scripts needs operator`;
    return null;
  }

  private async fire(s: Schedule): Promise<void> {
    const due = s.nextFireAt!;
    const now = Date.now();
    const late = now - due;
    const missed = late > this.d.misfireGraceMs;
    // Every due time up to now is covered by this one fire: no burst of catch-up runs.
    const next = nextAfter(timingOf(s), now);
    const claimed = await this.d.repo.claim(s.id, due, next, {
      scheduleId: s.id,
      dueAt: due,
      firedAt: now,
      nodeId: this.d.nodeId,
      status: 'claimed',
      taskId: null,
      scriptVersion: null,
      reason: null,
    });
    if (!claimed) return; // another process fired it, or it was changed meanwhile
    const log = this.d.log.child({ scheduleId: s.id, dueAt: new Date(due).toISOString() });
    if (missed && s.missed === 'skip') {
      log.info({ lateMs: late }, 'schedule fire missed; skipped');
      await this.d.repo.finishFire(s.id, due, {
        status: 'missed',
        reason: `missed by ${Math.round(late / 1000)} s (server down or busy); the schedule skips missed fires`,
      });
      return;
    }
    if (s.overlap === 'skip' && (await this.d.repo.running(s.id))) {
      await this.d.repo.finishFire(s.id, due, { status: 'skipped', reason: 'the previous run is still going (overlap: skip)' });
      return;
    }
    // A schedule runs with its creator's authority: once the creator may no longer run scripts
    // (disabled, deleted, demoted below operator), its fires stop too, each recorded as failed.
    const refusal = await this.creatorRefusal(s.createdBy);
    if (refusal) {
      await this.d.repo.finishFire(s.id, due, { status: 'failed', reason: refusal });
      this.d.audit.refused({
        actor: { username: `schedule:${s.name}`, role: null, ip: null },
        action: 'schedule.fire',
        targetType: 'schedule',
        targetId: s.id,
        details: { reason: refusal, createdBy: s.createdBy },
      });
      log.warn({ reason: refusal }, 'schedule fire refused');
      return;
    }
    try {
      const task = await this.d.scripts.run(
        {
          scriptId: s.scriptId,
          version: s.scriptVersion ?? undefined,
          params: s.params,
          secretParams: s.secretParams,
          targets: { selector: s.selector },
          cwd: null,
          timeoutSec: s.timeoutSec,
          concurrency: s.concurrency,
          maxFailures: s.maxFailures,
          offline: s.offline,
          queueTtlSec: s.queueTtlSec,
        },
        { username: `schedule:${s.name}`, role: null, ip: null },
        s.id,
      );
      await this.d.repo.finishFire(s.id, due, {
        status: 'started',
        taskId: task.id,
        scriptVersion: task.scriptVersion as number,
        reason: missed ? `ran once for fire(s) missed by ${Math.round(late / 1000)} s` : null,
      });
      log.info({ taskId: task.id }, 'schedule fired');
    } catch (err) {
      // Only our own errors are shown (viewers read the history): a database error's message can
      // carry the bound values, secrets included; the log gets it through the safe serializer.
      const reason = err instanceof ApiError ? err.message : 'could not start a task (internal error; see the server log)';
      await this.d.repo.finishFire(s.id, due, { status: 'failed', reason });
      log.warn(err instanceof ApiError ? { reason } : { reason, err }, 'schedule fire could not start a task');
    }
  }
}
