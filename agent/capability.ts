import type { AgentToServer, HelloExecution, SendOpts } from '../protocol/index.js';
import type { AgentConfig } from './config.js';
import type { LiveSettings } from './live-config.js';
import type { ServerHandlers } from './connection.js';
import type { AgentLog } from './log.js';
import type { Policy } from './policy.js';
import type { AgentState } from './state.js';
import type { z } from 'zod';

/** The agent's socket as capabilities see it. */
export interface Link {
  /** Control messages go ahead of queued bulk output (after their own session's or execution's). */
  send(msg: AgentToServer): boolean;
  /** Frames; `bulk` ones wait while the socket is backed up, `key` keeps a stream's order. */
  sendBinary(buf: Uint8Array, opts?: SendOpts): boolean;
  /** Bytes the socket holds plus bulk waiting for room (what flow control reads). */
  bufferedAmount(): number;
  /** True while welcomed and open. */
  connected(): boolean;
}

/** What every agent capability (executor, pty, updater) is built from. */
export interface AgentContext {
  cfg: AgentConfig;
  log: AgentLog;
  state: AgentState;
  link: Link;
  /** The server URL in use (of several in --server: the one connected or tried last). */
  serverUrl(): string;
  /** The host policy in force now (re-read on SIGHUP): capabilities ask for it at each use. */
  policy(): Policy;
  /** Settings in force now (own config < server's live configuration < host policy): read at each use. */
  settings(): LiveSettings;
  /** Exits the process after saying bye (restart by the supervisor). */
  exit(reason: string, code: number): Promise<void>;
}

/** A capability's lifetime hooks; every method optional except its handlers. */
export interface AgentCapability<K extends keyof ServerHandlers> {
  handlers: Pick<ServerHandlers, K>;
  /** Called after every welcome (connected or reconnected). */
  onWelcome?(): void;
  /** Called when the socket drops. */
  onDisconnected?(): void;
  /**
   * Called when the host policy was re-read (SIGHUP): what the new policy forbids must end now,
   * not only be refused from now on (a tightened policy must cut a shell or script already running).
   */
  onPolicy?(policy: Policy): void;
  /** Releases processes, timers and files; called once at shutdown. */
  stop?(): Promise<void>;
}

export type HelloExecutionT = z.infer<typeof HelloExecution>;
