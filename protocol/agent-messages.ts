import { z } from 'zod';
import { Labels, Metrics, UpdateState, id } from './common.js';
import { AgentSettings } from './agent-config.js';
import { HostPolicy } from './policy.js';

/* ---------------- agent → server ---------------- */

/** An execution the agent still runs, or finished while disconnected, named in hello. */
export const HelloExecution = z.object({
  executionId: id,
  state: z.enum(['running', 'finished']),
  /** Next output sequence number the agent would send (all chunks below it were produced). */
  nextSeq: z.number().int().nonnegative(),
});

export const Hello = z.object({
  type: z.literal('hello'),
  protocol: z.number().int().positive(),
  agentVersion: z.string().max(64),
  agentId: id,
  name: z.string().min(1).max(255),
  hostname: z.string().min(1).max(255),
  ips: z.array(z.string().max(64)).max(64),
  externalIp: z.string().max(64).nullable().optional(),
  platform: z.string().max(32),
  arch: z.string().max(32),
  os: z.string().max(255),
  cpus: z.number().int().nonnegative(),
  memoryBytes: z.number().int().nonnegative(),
  labels: Labels,
  capabilities: z.array(z.string().max(64)).max(64),
  executions: z.array(HelloExecution).max(10_000).default([]),
  /** The host's policy (absent from agents that predate it: nothing known, nothing refused early). */
  policy: HostPolicy.optional(),
});

/** Longest heartbeat round trip an agent reports (`rttMs`). */
export const HEARTBEAT_RTT_MAX_MS = 600_000;
/** The capability (hello) of an agent that reports its heartbeats' round trips: the server does not ping it for them. */
export const HEARTBEAT_RTT_CAPABILITY = 'heartbeat-rtt';
/**
 * `seq` (optional, counting up per agent process): the server acknowledges it with `heartbeat.ack`.
 * `rttMs` (optional): the round trip of the agent's last acknowledged heartbeat, from its sending
 * to its `heartbeat.ack`, measured by the agent (sent once, with the next heartbeat).
 */
export const Heartbeat = z.object({
  type: z.literal('heartbeat'),
  metrics: Metrics,
  seq: z.number().int().nonnegative().optional(),
  rttMs: z.number().nonnegative().max(HEARTBEAT_RTT_MAX_MS).optional(),
});
export const Bye = z.object({ type: z.literal('bye'), reason: z.string().max(255) });
export const AgentError = z.object({
  type: z.literal('error'),
  code: z.string().max(64),
  message: z.string().max(2048),
  ref: z.string().max(128).optional(),
});
/** Sent after SIGHUP re-read the config file. */
export const LabelsUpdate = z.object({ type: z.literal('labels'), labels: Labels });
/** Sent after SIGHUP re-read the host policy file. */
export const PolicyUpdate = z.object({ type: z.literal('policy'), policy: HostPolicy });

/**
 * Answer to `config`: the revision now in force, every setting's effective value (the pushed one,
 * or the agent's own, as limited by its host policy), and for each pushed key that is not in force
 * as sent, why (`notes`: limited or refused by host policy).
 */
export const ConfigApplied = z.object({
  type: z.literal('config.applied'),
  revision: z.string().max(64),
  effective: z.object({
    heartbeatIntervalSec: z.number().positive().nullable(),
    logLevel: z.string().max(16),
    labels: z.record(z.string().max(63), z.string().max(255)),
    terminalIdleTimeoutSec: z.number().int().positive(),
    execBufferBytes: z.number().int().positive(),
  }),
  notes: z.record(z.string().max(64), z.string().max(512)),
});

export const ExecStarted = z.object({
  type: z.literal('exec.started'),
  executionId: id,
  pid: z.number().int().nullable(),
  startedAt: z.number().int(),
  /** How the process tree is contained: a cgroup path, or 'pgid' when no cgroup could be made. */
  containment: z.string().max(255).optional(),
});
export const ExecFinished = z.object({
  type: z.literal('exec.finished'),
  executionId: id,
  status: z.enum(['succeeded', 'failed', 'timeout', 'cancelled']),
  exitCode: z.number().int().nullable(),
  signal: z.string().max(32).nullable(),
  startedAt: z.number().int(),
  finishedAt: z.number().int(),
  /** Total output chunks sent for this execution (so the server knows when it has them all). */
  outputSeq: z.number().int().nonnegative(),
  /** The agent had to drop output (its own per-execution buffer overflowed while offline). */
  truncated: z.boolean(),
  error: z.string().max(2048).optional(),
  /** Why the agent itself ended it (`agent stopping`: SIGTERM, restart or update, past the drain time). */
  reason: z.string().max(255).optional(),
});
/** The agent refused or could not start an exec (journal says already seen, limit, ...). */
export const ExecRejected = z.object({
  type: z.literal('exec.rejected'),
  executionId: id,
  reason: z.string().max(1024),
  /** `policy_denied` when the host's policy forbids it (the execution ends `policy_denied`). */
  code: z.string().max(64).optional(),
});

export const TermOpened = z.object({ type: z.literal('term.opened'), sessionId: id, pid: z.number().int() });
export const TermExit = z.object({
  type: z.literal('term.exit'),
  sessionId: id,
  exitCode: z.number().int().nullable(),
  signal: z.number().int().nullable(),
  reason: z.string().max(255),
  /** Set when the session never started or was ended by a limit: an ErrorCode such as `limit_exceeded`. */
  code: z.string().max(64).optional(),
});

export const UpdateStatus = z.object({
  type: z.literal('update.status'),
  rolloutId: id,
  version: z.string().max(64),
  state: UpdateState,
  reason: z.string().max(2048).optional(),
});

/* File distribution (issue 13): see protocol/README.md "File distribution". */
const SHA256 = z.string().regex(/^[0-9a-f]{64}$/);
/** Flow control for a `file.apply`: the agent has written every byte below `offset` and wants more (offset 0: send from the start). */
export const FileAck = z.object({ type: z.literal('file.ack'), transferId: id, offset: z.number().int().nonnegative() });
/** The outcome of a `file.apply` or `file.remove`. */
export const FileResult = z.object({
  type: z.literal('file.result'),
  transferId: id,
  state: z.enum(['applied', 'unchanged', 'removed', 'failed']),
  reason: z.string().max(2048).optional(),
  /** `policy_denied` when the host policy's allowedPaths forbid the path. */
  code: z.string().max(64).optional(),
  /** True when the bytes on disk changed (a post-apply command runs only then). */
  contentChanged: z.boolean().optional(),
});
/** One managed file as the agent last checked it on disk. */
export const FileStateItem = z.object({
  fileId: id,
  revision: z.number().int().positive(),
  path: z.string().max(4096),
  /** `ok`: bytes, mode and owner match the revision applied; `drifted`: something changed; `missing`: the file is gone. */
  state: z.enum(['ok', 'drifted', 'missing']),
  sha256: SHA256.nullable(),
  reason: z.string().max(1024).optional(),
});
/** The agent's managed files: all of them after each welcome (`full`), then the ones whose state changed. */
export const FileState = z.object({ type: z.literal('file.state'), full: z.boolean(), files: z.array(FileStateItem).max(10_000) });

/*
 * Terminal file transfer: see protocol/README.md "Terminal file transfer". Uploads reuse `file.ack`
 * (flow control) and FILE_DATA frames server→agent; downloads send FILE_DATA frames agent→server,
 * acknowledged with `term.download.ack`.
 */
/**
 * Progress and outcome of a `term.upload` or `term.download`. `ready` (downloads): `size` bytes of
 * `path` follow as FILE_DATA frames; `done`: an upload's file is in place at `path`, or a download's
 * last frame was sent (`sha256` of what was read); `failed` with `code` (`policy_denied`, `conflict`,
 * `not_found`, `forbidden`, `payload_too_large`, `bad_request`, `unavailable`) and `reason`.
 * Carries no sessionId: it is ordered behind its transfer's frames.
 */
export const TermTransfer = z.object({
  type: z.literal('term.transfer'),
  transferId: id,
  state: z.enum(['ready', 'done', 'failed']),
  path: z.string().max(4096).optional(),
  size: z.number().int().nonnegative().optional(),
  sha256: SHA256.optional(),
  reason: z.string().max(2048).optional(),
  code: z.string().max(64).optional(),
});

export const AgentToServer = z.discriminatedUnion('type', [
  Hello,
  Heartbeat,
  Bye,
  AgentError,
  LabelsUpdate,
  PolicyUpdate,
  ConfigApplied,
  ExecStarted,
  ExecFinished,
  ExecRejected,
  TermOpened,
  TermExit,
  UpdateStatus,
  FileAck,
  FileResult,
  FileState,
  TermTransfer,
]);
export type AgentToServer = z.infer<typeof AgentToServer>;
export type AgentMessageType = AgentToServer['type'];
export type AgentMessage<T extends AgentMessageType> = Extract<AgentToServer, { type: T }>;
export type Hello = z.infer<typeof Hello>;

/* ---------------- server → agent ---------------- */

export const Welcome = z.object({
  type: z.literal('welcome'),
  protocol: z.number().int(),
  agentId: id,
  heartbeatIntervalMs: z.number().int().positive(),
  serverTime: z.number().int(),
  /** Present only on enrollment: the agent's own secret, to be stored 0600 and never sent again. */
  secret: z.string().optional(),
});
export const ServerError = AgentError;
/** Answer to a heartbeat that carried `seq` (agents that send none get none). */
export const HeartbeatAck = z.object({ type: z.literal('heartbeat.ack'), seq: z.number().int().nonnegative() });
export const Restart = z.object({ type: z.literal('restart'), reason: z.string().max(255) });
/**
 * Live configuration (agents that list the `config` capability in hello): the whole desired set
 * (absent keys: the agent's own values), sent after every welcome and whenever it changes. The
 * agent applies it, as its host policy allows, and answers `config.applied` with the revision.
 */
export const ConfigPush = z.object({ type: z.literal('config'), revision: z.string().max(64), settings: AgentSettings });

export const ExecRun = z.object({
  type: z.literal('exec.run'),
  executionId: id,
  taskId: id,
  script: z.string(),
  interpreter: z.string().max(255),
  args: z.array(z.string().max(65_536)).max(256),
  env: z.record(z.string().max(255), z.string().max(65_536)),
  cwd: z.string().max(4096).nullable(),
  timeoutSec: z.number().int().positive(),
  /** base64 ed25519 signature of scriptSigningMessage(...) (policy.ts), when the task was signed. */
  signature: z.string().max(512).optional(),
});
export const ExecCancel = z.object({ type: z.literal('exec.cancel'), executionId: id, reason: z.string().max(255) });
/** After hello: the server has output below `fromSeq`; resend the rest, then the result if finished. */
export const ExecResume = z.object({ type: z.literal('exec.resume'), executionId: id, fromSeq: z.number().int().nonnegative() });
/** The server stored the result: the agent may forget the execution's buffers. */
export const ExecAck = z.object({ type: z.literal('exec.ack'), executionId: id });

export const TermOpen = z.object({
  type: z.literal('term.open'),
  sessionId: id,
  cols: z.number().int().min(1).max(1000),
  rows: z.number().int().min(1).max(1000),
  shell: z.string().max(255).optional(),
  user: z.string().max(64).optional(),
});
export const TermResize = z.object({
  type: z.literal('term.resize'),
  sessionId: id,
  cols: z.number().int().min(1).max(1000),
  rows: z.number().int().min(1).max(1000),
});
export const TermClose = z.object({ type: z.literal('term.close'), sessionId: id, reason: z.string().max(255) });
/** Flow control: `bytes` more output bytes of this session were consumed downstream. */
export const TermAck = z.object({ type: z.literal('term.ack'), sessionId: id, bytes: z.number().int().nonnegative() });

export const Update = z.object({
  type: z.literal('update'),
  rolloutId: id,
  version: z.string().max(64),
  url: z.string().max(4096),
  size: z.number().int().positive(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  signature: z.string().max(512),
  allowDowngrade: z.boolean().default(false),
});

/**
 * Put a file on the host: the agent checks its policy and what is on disk first (same bytes, mode
 * and owner: `file.result unchanged`, nothing is sent), else asks for the content with `file.ack
 * offset 0` and receives FILE_DATA frames, acknowledging what it has written.
 */
export const FileApply = z.object({
  type: z.literal('file.apply'),
  transferId: id,
  fileId: id,
  revision: z.number().int().positive(),
  path: z.string().min(1).max(4096),
  /** User and group names (null: keep the current owner, or the agent's user for a new file). */
  owner: z.string().max(64).nullable(),
  group: z.string().max(64).nullable(),
  mode: z.number().int().min(0).max(0o7777),
  size: z.number().int().nonnegative(),
  sha256: SHA256,
});
/** Remove a managed file from the host (only if it still is what the agent applied) and forget it. */
export const FileRemove = z.object({ type: z.literal('file.remove'), transferId: id, fileId: id, path: z.string().min(1).max(4096) });
/** Stop managing a file (no drift reports), leaving it on disk. */
export const FileForget = z.object({ type: z.literal('file.forget'), fileId: id });

/**
 * Put `size` bytes (sha256 `sha256`) into the current directory of the session's shell as `name` (a
 * plain file name: no `/`, not `.` or `..`). The agent checks its policy, that nothing exists at that
 * name (nothing is overwritten), then asks for the bytes with `file.ack offset 0` and acknowledges
 * what it wrote; it answers `term.transfer` `done` (with the full path) or `failed`.
 */
export const TermUpload = z.object({
  type: z.literal('term.upload'),
  transferId: id,
  sessionId: id,
  name: z.string().min(1).max(255),
  size: z.number().int().nonnegative(),
  sha256: SHA256,
});
/** Send the file at `path` (absolute, or relative to the shell's current directory) if at most `maxBytes`. */
export const TermDownload = z.object({
  type: z.literal('term.download'),
  transferId: id,
  sessionId: id,
  path: z.string().min(1).max(4096),
  maxBytes: z.number().int().positive(),
});
/** Download flow control: the server passed every byte below `offset` on. */
export const TermDownloadAck = z.object({ type: z.literal('term.download.ack'), transferId: id, offset: z.number().int().nonnegative() });
/** Abandon a terminal transfer (the browser went away, a timeout): temp files are removed, reading stops. */
export const TermTransferCancel = z.object({ type: z.literal('term.transfer.cancel'), transferId: id, reason: z.string().max(255) });

export const ServerToAgent = z.discriminatedUnion('type', [
  Welcome,
  ServerError,
  Restart,
  HeartbeatAck,
  ConfigPush,
  ExecRun,
  ExecCancel,
  ExecResume,
  ExecAck,
  TermOpen,
  TermResize,
  TermClose,
  TermAck,
  Update,
  FileApply,
  FileRemove,
  FileForget,
  TermUpload,
  TermDownload,
  TermDownloadAck,
  TermTransferCancel,
]);
export type ServerToAgent = z.infer<typeof ServerToAgent>;
export type ServerMessageType = ServerToAgent['type'];
export type ServerMessage<T extends ServerMessageType> = Extract<ServerToAgent, { type: T }>;
