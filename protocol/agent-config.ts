import { z } from 'zod';
import { Labels } from './common.js';

/** Log levels an agent accepts (its config file, `--log-level`, and live configuration). */
export const AGENT_LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;

/**
 * Live agent configuration: settings the server pushes to an agent (`config`), merged from the
 * rules that match it. Every key is optional (absent: the agent's own value). The server checks
 * its bounds before storing a rule; the agent checks its host policy before applying, and the
 * policy always wins (`config.applied` says what is in force and why a key was limited or refused).
 */
export const AgentSettings = z
  .object({
    /** Seconds between heartbeats (instead of the server's default from `welcome`). */
    heartbeatIntervalSec: z.number().int().positive().optional(),
    logLevel: z.enum(AGENT_LOG_LEVELS).optional(),
    /** Merged over the labels of the agent's config file (these win); reported back as its labels. */
    labels: Labels.optional(),
    /** A terminal with no input and no output for this long is closed (new sessions). */
    terminalIdleTimeoutSec: z.number().int().positive().optional(),
    /** Output an execution keeps for resends while the server is away (new executions). */
    execBufferBytes: z.number().int().positive().optional(),
  })
  .strict();
export type AgentSettings = z.infer<typeof AgentSettings>;
export const AGENT_SETTING_KEYS = Object.keys(AgentSettings.shape) as (keyof AgentSettings)[];
