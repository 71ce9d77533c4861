import { z } from 'zod';

/*
 * The dashboard's read models (GET /api/dashboard, GET /api/dashboard/trend) and the password
 * rule the server enforces (the console shows it before submit from the same constants).
 */

const Time = z.iso.datetime();
const Count = z.number().int().nonnegative();

/** Shortest and longest password the server accepts for a user (POST/PATCH /api/users, reset-password). */
export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 1024;
/** The rule in words, as the console shows it before submit and the server answers a violation with. */
export const PASSWORD_RULE = `at least ${PASSWORD_MIN_LENGTH} characters (at most ${PASSWORD_MAX_LENGTH})`;

export const PasswordRules = z
  .object({
    minLength: Count,
    maxLength: Count,
    rule: z.string().describe('the rule in words'),
  })
  .meta({ id: 'PasswordRules' });
export type PasswordRules = z.infer<typeof PasswordRules>;

/** One host that needs attention. */
export const AttentionHost = z
  .object({
    agentId: z.string(),
    name: z.string(),
    detail: z.string().describe('why, in words: "offline since …", "disk 93% full", "3 failed runs"'),
    at: Time.nullable().describe('when it went offline, when the disk was measured, or the last failed run'),
    diskPercent: z.number().nullable().optional(),
    failures: Count.optional(),
    taskId: z.string().nullable().optional().describe('the task of the latest failed run'),
  })
  .meta({ id: 'AttentionHost' });
export type AttentionHost = z.infer<typeof AttentionHost>;

/** A list of the first hosts of one kind and how many there are in all. */
const AttentionList = z.object({ total: Count, items: z.array(AttentionHost) });

export const ActiveRollout = z
  .object({
    id: z.string(),
    version: z.string(),
    state: z.string(),
    total: Count,
    done: Count,
    failed: Count,
    createdBy: z.string(),
    createdAt: Time,
  })
  .meta({ id: 'ActiveRollout' });
export type ActiveRollout = z.infer<typeof ActiveRollout>;
export const ActiveDistribution = z
  .object({
    id: z.string(),
    fileId: z.string(),
    path: z.string(),
    revision: z.number().int().nullable(),
    kind: z.string(),
    state: z.string(),
    total: Count,
    done: Count,
    failed: Count,
    createdBy: z.string(),
    createdAt: Time,
  })
  .meta({ id: 'ActiveDistribution' });
export type ActiveDistribution = z.infer<typeof ActiveDistribution>;

export const Dashboard = z
  .object({
    attention: z.object({
      offline: AttentionList.describe('agents not connected, most recently seen first'),
      disk: AttentionList.describe('online agents whose disk is at least `diskPercent` full, fullest first'),
      failed: AttentionList.describe('agents with failed, timed-out or lost runs in the last `failedWindowHours`, latest first'),
    }),
    diskPercent: z.number().describe('threshold of "high disk" (MUSTER_DASHBOARD_DISK_PERCENT)'),
    failedWindowHours: Count,
    rollouts: z.array(ActiveRollout).describe('rollouts running or paused'),
    distributions: z.array(ActiveDistribution).describe('file distributions running or paused'),
  })
  .meta({ id: 'Dashboard' });
export type Dashboard = z.infer<typeof Dashboard>;

export const TrendBucket = z
  .object({
    start: Time.describe('start of the hour (UTC)'),
    succeeded: Count,
    failed: Count.describe('failed, timeout and lost'),
    cancelled: Count,
  })
  .meta({ id: 'TrendBucket' });
export type TrendBucket = z.infer<typeof TrendBucket>;
export const ExecutionTrend = z
  .object({
    hours: Count,
    bucketMs: Count,
    buckets: z.array(TrendBucket).describe('oldest first, one per hour, empty hours included'),
  })
  .meta({ id: 'ExecutionTrend' });
export type ExecutionTrend = z.infer<typeof ExecutionTrend>;
