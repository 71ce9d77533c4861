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
  /** Enrolment refused at hello: the id enrolled meanwhile, or the enrolment token was used up, expired or revoked. */
  enrolmentRefused: 4009,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Stable error codes carried in `error` messages and REST error bodies. */
export type ErrorCode =
  | 'bad_request'
  | 'invalid_message'
  | 'unknown_type'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  /** A rerun would re-run `lost` executions (which may have run) without saying so. */
  | 'lost_unconfirmed'
  | 'payload_too_large'
  | 'rate_limited'
  | 'unavailable'
  | 'database_unavailable'
  | 'insufficient_storage'
  | 'selector_syntax'
  | 'agent_offline'
  | 'limit_exceeded'
  | 'cross_site'
  /** The host's own policy (policy.json on the agent) forbids it. */
  | 'policy_denied'
  | 'internal';
