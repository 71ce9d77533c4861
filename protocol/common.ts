import { z } from 'zod';

/** Current wire protocol version; see protocol/README.md for the versioning rule. */
export const PROTOCOL_VERSION = 1;
/** Oldest protocol version the server still accepts. */
export const MIN_PROTOCOL_VERSION = 1;

const labelKey = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[A-Za-z0-9_.\/-]+$/, 'label keys are [A-Za-z0-9_./-]');
/** Labels: small string map chosen by the host's config or an operator. */
export const Labels = z.record(labelKey, z.string().max(255)).refine((o) => Object.keys(o).length <= 64, 'at most 64 labels');
export type Labels = z.infer<typeof Labels>;

/** One heartbeat's worth of host metrics. */
export const Metrics = z.object({
  cpuPercent: z.number().min(0).max(100),
  memUsedBytes: z.number().int().nonnegative(),
  memTotalBytes: z.number().int().nonnegative(),
  load: z.tuple([z.number(), z.number(), z.number()]),
  diskUsedBytes: z.number().int().nonnegative(),
  diskTotalBytes: z.number().int().nonnegative(),
  uptimeSec: z.number().nonnegative(),
  runningExecutions: z.number().int().nonnegative(),
  openTerminals: z.number().int().nonnegative(),
});
export type Metrics = z.infer<typeof Metrics>;

export const ExecutionState = z.enum(['pending', 'dispatched', 'running', 'succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'skipped', 'policy_denied']);
export type ExecutionState = z.infer<typeof ExecutionState>;
/** States after which an execution never changes again. */
export const FINAL_EXECUTION_STATES: readonly ExecutionState[] = ['succeeded', 'failed', 'timeout', 'cancelled', 'lost', 'skipped', 'policy_denied'];

export const UpdateState = z.enum(['pending', 'skipped', 'downloading', 'verifying', 'installing', 'restarting', 'succeeded', 'failed', 'rolled_back']);
export type UpdateState = z.infer<typeof UpdateState>;

/**
 * The state of a run in waves (a rollout, a file distribution): running → soaking (waits
 * soakSeconds after a wave) → awaiting_approval (waits for approve) → running …; paused past
 * maxFailures or by hand; ends succeeded | failed | cancelled | nothing_to_do (every target was
 * skipped, or there was none: nothing was done, which is not a success).
 */
export const WaveRunState = z.enum(['running', 'paused', 'soaking', 'awaiting_approval', 'succeeded', 'failed', 'cancelled', 'nothing_to_do']);
export type WaveRunState = z.infer<typeof WaveRunState>;

export const id = z.string().min(1).max(128);
