/**
 * Error codes shared by every channel. Each WebSocket-level code maps to a close code in
 * 4000–4999; REST errors use the same `code` strings with an HTTP status.
 */
export const CloseCode = {
  /** Normal close initiated by either side (agent bye, console logout). */
  normal: 1000,
  /** Server is going down; agents reconnect with backoff. */
  serverShutdown: 1001,
  /** Frame larger than maxPayload (set by ws itself). */
  tooLarge: 1009,
  /** The peer sent too many invalid messages. */
  protocolError: 4000,
  /** No valid hello within the hello deadline. */
  helloTimeout: 4001,
  /** hello named an agent id other than the authenticated one. */
  identityMismatch: 4002,
  /** Protocol version not supported. */
  unsupportedProtocol: 4003,
  /** A newer connection for the same agent took over. */
  replaced: 4004,
  /** The agent was revoked by an operator. */
  revoked: 4005,
  /** No heartbeat for three intervals. */
  heartbeatTimeout: 4006,
  /** The server asked the agent to restart. */
  restart: 4007,
  /** The console session expired or was logged out. */
  sessionEnded: 4008,
  /** Enrollment refused at hello: the id enrolled meanwhile, or the enrollment token was used up, expired or revoked. */
  enrollmentRefused: 4009,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Stable error codes carried in `error` messages and REST error bodies. */
export const ErrorCode = {
  badRequest: 'bad_request',
  invalidMessage: 'invalid_message',
  unknownType: 'unknown_type',
  unauthorized: 'unauthorized',
  forbidden: 'forbidden',
  notFound: 'not_found',
  conflict: 'conflict',
  /** A rerun would re-run `lost` executions (which may have run) without saying so. */
  lostUnconfirmed: 'lost_unconfirmed',
  payloadTooLarge: 'payload_too_large',
  rateLimited: 'rate_limited',
  unavailable: 'unavailable',
  databaseUnavailable: 'database_unavailable',
  insufficientStorage: 'insufficient_storage',
  selectorSyntax: 'selector_syntax',
  agentOffline: 'agent_offline',
  limitExceeded: 'limit_exceeded',
  crossSite: 'cross_site',
  /** The host's own policy (policy.json on the agent) forbids it. */
  policyDenied: 'policy_denied',
  internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];
/** Every error code, for schemas (`z.enum(ERROR_CODES)`). */
export const ERROR_CODES = Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]];

/**
 * Why an agent refused an `exec.run` (`exec.rejected.code`); the `reason` beside it is prose for
 * people. Agents before these codes sent only a reason (see `rejectCodeOf`).
 */
export const RejectCode = {
  /** The host policy forbids it: the execution ends `policy_denied`. */
  policyDenied: 'policy_denied',
  /** The agent's journal has seen this execution id before: whether it ran is unknown (`lost`). */
  duplicate: 'duplicate',
  /** `exec.resume` named an execution the agent neither runs nor remembers: its outcome is unknown (`lost`). */
  unknownExecution: 'unknown_execution',
} as const;
export type RejectCode = (typeof RejectCode)[keyof typeof RejectCode];

/**
 * The code of an `exec.rejected`: the one the agent sent, or for an agent that predates codes the
 * one its fixed reason wording implied (its only two wordings, matched once here).
 */
export function rejectCodeOf(m: { code?: string; reason: string }): string | undefined {
  if (m.code !== undefined) return m.code;
  if (m.reason.startsWith('duplicate')) return RejectCode.duplicate;
  if (m.reason.startsWith('unknown')) return RejectCode.unknownExecution;
  return undefined;
}

/**
 * Why an agent's connection ended, as recorded in its connection history
 * (`GET /api/agents/:id/connections` `reason`) and published with `agent.offline`.
 */
export const DisconnectReason = {
  agentShutdown: 'agent shutdown',
  connectionLost: 'connection lost',
  heartbeatTimeout: 'heartbeat timeout',
  replaced: 'replaced',
  serverShutdown: 'server shutdown',
  revoked: 'revoked',
  restartRequested: 'restart requested',
  protocolError: 'protocol error',
  serverRestart: 'server restart',
  /** Cluster: the server node holding the socket stopped answering; recorded by another node. */
  nodeLost: 'node lost',
} as const;
export type DisconnectReason = (typeof DisconnectReason)[keyof typeof DisconnectReason];
