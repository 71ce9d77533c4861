import type { AgentMessage, AgentMessageType, ConsoleMessage, ConsoleMessageType, SendOpts, ServerToConsole, Stream } from '../../protocol/index.js';
import type { Principal } from '../auth/auth-service.js';
import type { AgentChannel } from '../fleet/fleet.js';
import type { Logger } from '../log.js';

/** What an agent message handler knows about the socket it came from. */
export interface AgentCtx {
  agentId: string;
  channel: AgentChannel;
  log: Logger;
}

export type AgentHandler<T extends AgentMessageType> = (ctx: AgentCtx, msg: AgentMessage<T>) => void | Promise<void>;

/**
 * One handler for every agent→server message type except hello (handled by the link itself).
 * A mapped type: adding a message to the protocol does not compile until a handler exists.
 */
export type AgentHandlers = { [K in Exclude<AgentMessageType, 'hello'>]: AgentHandler<K> };

/** Handlers for binary frames from agents. */
export interface AgentBinaryHandlers {
  termData(ctx: AgentCtx, sessionId: string, data: Uint8Array): void;
  execOutput(ctx: AgentCtx, executionId: string, stream: Stream, seq: number, data: Uint8Array): void;
  /** File bytes an agent sends (a terminal download); a transfer the server does not hold is ignored. */
  fileData(ctx: AgentCtx, transferId: string, offset: number, data: Uint8Array): void;
}

/** A console socket as services see it. */
export interface ConsoleChannel {
  readonly id: number;
  readonly principal: Principal;
  /** Peer address of the socket (for audit records). */
  readonly remoteAddress?: string | null;
  /** True when the socket was closed because its session, token or user ended (close 4008). */
  readonly sessionEnded?: boolean;
  /**
   * Control message; `droppable` ones are bulk (they wait behind interactive frames) and are
   * skipped while the socket is backed up. `json` is `msg` already serialized, from a caller that
   * sends one message to many consoles (serialized once, not once per console). Returns false if not sent.
   */
  send(msg: ServerToConsole, droppable?: boolean, json?: string): boolean;
  /** A frame; `bulk` ones wait while the socket is backed up, `key` keeps a stream's order. */
  sendBinary(buf: Uint8Array, opts?: SendOpts): boolean;
  /** Bytes the socket holds plus bulk waiting for room. */
  bufferedAmount(): number;
  close(code: number, reason: string): void;
  /** Registers cleanup run exactly once when the socket closes. */
  onClose(fn: () => void): void;
}

export type ConsoleHandler<T extends ConsoleMessageType> = (ch: ConsoleChannel, msg: ConsoleMessage<T>) => void | Promise<void>;
export type ConsoleHandlers = { [K in ConsoleMessageType]: ConsoleHandler<K> };
export interface ConsoleBinaryHandlers {
  termData(ch: ConsoleChannel, sessionId: string, data: Uint8Array): void;
}
