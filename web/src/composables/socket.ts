/**
 * The one console WebSocket. It reconnects by itself with backoff and jitter, exposes its state
 * (the shell shows a "reconnecting" banner), and after every (re)connect announces `ready` so each
 * view re-fetches what it shows (events missed while disconnected are never replayed).
 *
 * Subscriptions made inside a component or effect scope are released with that scope.
 */
import { getCurrentScope, onScopeDispose, ref } from 'vue';
import type { ConsoleToServer, ServerToConsole } from '../../../protocol/console-messages';
import { CloseCode } from '../../../protocol/errors';
import { decodeFrame, type Frame } from '../../../protocol/frames';
import { ApiError, toLogin } from '../api/client';
import { loadSession, sessionExpired } from './session';

export type SocketState = 'idle' | 'connecting' | 'open' | 'reconnecting';
type MsgType = ServerToConsole['type'];
type Msg<T extends MsgType> = Extract<ServerToConsole, { type: T }>;

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;

/** Reactive connection state for the UI. */
export const socketState = ref<SocketState>('idle');
export const socketAttempts = ref(0);

let ws: WebSocket | null = null;
let wanted = false;
let retryTimer: ReturnType<typeof setTimeout> | null = null;
let everOpened = false;
/**
 * The socket was opened before anyone knew whether a session exists (`connectEarly`): if it is
 * refused it is dropped quietly, never retried and never a reason to ask about the session.
 */
let tentative = false;
const handlers = new Map<MsgType, Set<(m: never) => void>>();
const frameHandlers = new Set<(f: Frame) => void>();
const readyHandlers = new Set<(reconnect: boolean) => void>();

function scoped(unsub: () => void): () => void {
  if (getCurrentScope()) onScopeDispose(unsub);
  return unsub;
}

/** Calls `fn` for every message of `type`; returns the unsubscribe function. */
export function onMessage<T extends MsgType>(type: T, fn: (m: Msg<T>) => void): () => void {
  let set = handlers.get(type);
  if (!set) handlers.set(type, (set = new Set()));
  const h = fn as (m: never) => void;
  set.add(h);
  return scoped(() => set.delete(h));
}

/** Calls `fn` for every binary frame (terminal data, execution output). */
export function onFrame(fn: (f: Frame) => void): () => void {
  frameHandlers.add(fn);
  return scoped(() => frameHandlers.delete(fn));
}

/**
 * Calls `fn` after every `ready` (first connect and each reconnect) so state is re-fetched. If the
 * socket is already open, `fn(false)` runs at once.
 */
export function onReady(fn: (reconnect: boolean) => void): () => void {
  readyHandlers.add(fn);
  if (socketState.value === 'open') fn(false);
  return scoped(() => readyHandlers.delete(fn));
}

/** Sends a control message; false when the socket is not open (callers resend after `ready`). */
export function send(msg: ConsoleToServer): boolean {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(msg));
  return true;
}

/** Sends a binary frame (terminal input). */
export function sendBinary(data: Uint8Array): boolean {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(data);
  return true;
}

/** Opens the socket (idempotent) and keeps it open until `disconnect`. */
export function connect(): void {
  wanted = true;
  tentative = false;
  if (ws) return;
  open();
}

/**
 * Opens the socket before the session is known (the router's guard on a cold load), so its
 * handshake and `ready` overlap the question who is signed in and the first render instead of
 * following them. The cookie authenticates it as it would any socket. Until `connect()` takes it
 * over (the shell, once the user is known), it is tentative: refused (nobody signed in), it is
 * dropped without a retry, a banner or a session check; `dropEarly()` closes it.
 */
export function connectEarly(): void {
  if (ws || wanted) return;
  tentative = true;
  open();
}

/** Closes a socket `connectEarly` opened that nothing took over (nobody is signed in). */
export function dropEarly(): void {
  if (!tentative) return;
  tentative = false;
  const w = ws;
  ws = null;
  socketState.value = 'idle';
  w?.close(1000, 'not signed in');
}

/** Closes the socket for good (logout). */
export function disconnect(): void {
  for (const url of [...nodeSocks.keys()]) closeNodeSocket(url);
  wanted = false;
  tentative = false;
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  const w = ws;
  ws = null;
  everOpened = false;
  socketState.value = 'idle';
  w?.close(1000, 'logout');
}

function open(): void {
  socketState.value = everOpened ? 'reconnecting' : 'connecting';
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/console`;
  const sock = new WebSocket(url);
  sock.binaryType = 'arraybuffer';
  ws = sock;
  let gotReady = false;
  sock.onmessage = (ev: MessageEvent) => {
    if (ws !== sock) return;
    const m = decode(ev);
    if (!m) return;
    if (m.type === 'ready') {
      gotReady = true;
      const reconnect = everOpened;
      everOpened = true;
      socketAttempts.value = 0;
      socketState.value = 'open';
      for (const h of [...readyHandlers]) h(reconnect);
    }
    dispatch(m);
  };
  sock.onclose = (ev: CloseEvent) => {
    if (ws !== sock) return;
    ws = null;
    if (tentative) {
      // Opened before the session was known and refused or cut before anything took it over.
      tentative = false;
      socketState.value = 'idle';
      return;
    }
    if (!wanted) return;
    // The server ended the socket because the session, token or user changed (logout, expiry,
    // role change): back to the login page if the session is gone, else reconnect with the new rights.
    if (ev.code === CloseCode.sessionEnded) {
      socketState.value = 'reconnecting';
      return void checkSession().then((ok) => {
        if (ok && wanted && !ws) open();
      });
    }
    socketState.value = everOpened ? 'reconnecting' : 'connecting';
    socketAttempts.value++;
    // The upgrade is refused with an HTTP status we cannot see; if it never became ready, ask the API.
    if (!gotReady && socketAttempts.value >= 2) void checkSession();
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(socketAttempts.value - 1, 6));
    retryTimer = setTimeout(
      () => {
        retryTimer = null;
        if (wanted && !ws) open();
      },
      base / 2 + Math.random() * (base / 2),
    );
  };
}

/** A frame (handed to the frame handlers here: null) or a message of a console socket; null when unreadable. */
function decode(ev: MessageEvent): ServerToConsole | null {
  if (typeof ev.data !== 'string') {
    let f: Frame;
    try {
      f = decodeFrame(new Uint8Array(ev.data as ArrayBuffer));
    } catch {
      return null;
    }
    for (const h of frameHandlers) h(f);
    return null;
  }
  try {
    return JSON.parse(ev.data) as ServerToConsole;
  } catch {
    return null;
  }
}

function dispatch(m: ServerToConsole): void {
  const set = handlers.get(m.type);
  if (set) for (const h of [...set]) (h as (x: ServerToConsole) => void)(m);
}

/* ---------------- sockets on other server nodes ---------------- */

/**
 * A console socket on another server node of a cluster (its MUSTER_NODE_URL): the terminals of the
 * agents that node holds are opened on it, so their output is not relayed through the node of the
 * main socket and NATS. Its messages and frames reach the same handlers as the main socket's
 * (terminal messages name their ref or session); its `ready` does not (views do not re-fetch).
 * It does not reconnect by itself: when it closes, its users go back through the main socket,
 * which tells them again where the session is.
 */
export interface NodeSocket {
  readonly url: string;
  /** Open and past its `ready`. */
  readonly isReady: boolean;
  send(msg: ConsoleToServer): boolean;
  sendBinary(data: Uint8Array): boolean;
}

interface NodeSock extends NodeSocket {
  ws: WebSocket | null;
  isReady: boolean;
  waiting: ((ok: boolean) => void)[];
  lostFns: Set<(everReady: boolean) => void>;
}

const nodeSocks = new Map<string, NodeSock>();

/** The `/ws/console` address of a node's URL (a path on this page's origin, or absolute). */
export function nodeSocketUrl(url: string): string {
  const u = new URL(url, location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/ws/console`;
  u.search = '';
  u.hash = '';
  return u.toString();
}

/**
 * The socket on the node at `url`, opened if needed; resolves once it is ready, or null when it
 * cannot be reached from this page (refused, a foreign origin, closed before `ready`).
 * `onLost(everReady)` runs when it closes.
 */
export function nodeSocket(url: string, onLost: (everReady: boolean) => void): Promise<NodeSocket | null> {
  let n = nodeSocks.get(url);
  if (!n) {
    const node: NodeSock = {
      url,
      ws: null,
      isReady: false,
      waiting: [],
      lostFns: new Set(),
      send(msg) {
        if (!node.ws || node.ws.readyState !== WebSocket.OPEN) return false;
        node.ws.send(JSON.stringify(msg));
        return true;
      },
      sendBinary(data) {
        if (!node.ws || node.ws.readyState !== WebSocket.OPEN) return false;
        node.ws.send(data);
        return true;
      },
    };
    n = node;
    nodeSocks.set(url, node);
    const lost = () => {
      if (nodeSocks.get(url) !== node) return;
      nodeSocks.delete(url);
      const everReady = node.isReady;
      node.isReady = false;
      node.ws = null;
      for (const w of node.waiting.splice(0)) w(false);
      for (const fn of [...node.lostFns]) fn(everReady);
    };
    let sock: WebSocket;
    try {
      sock = new WebSocket(nodeSocketUrl(url));
    } catch {
      // Not a URL this page may open (the Content-Security-Policy allows this origin's only).
      queueMicrotask(lost);
      return new Promise((resolve) => node.waiting.push(() => resolve(null)));
    }
    sock.binaryType = 'arraybuffer';
    node.ws = sock;
    sock.onmessage = (ev: MessageEvent) => {
      const m = decode(ev);
      if (!m) return;
      if (m.type === 'ready') {
        node.isReady = true;
        for (const w of node.waiting.splice(0)) w(true);
        return;
      }
      dispatch(m);
    };
    sock.onclose = lost;
  }
  const node = n;
  node.lostFns.add(onLost);
  if (node.isReady) return Promise.resolve(node);
  return new Promise((resolve) => node.waiting.push((ok) => resolve(ok ? node : null)));
}

/** Closes the node socket at `url` (no terminal uses it any more). */
export function closeNodeSocket(url: string): void {
  const n = nodeSocks.get(url);
  if (!n) return;
  nodeSocks.delete(url);
  for (const w of n.waiting.splice(0)) w(false);
  n.ws?.close(1000, 'no terminal left');
}

/** Asks the API whether the session still holds; false (and the login page) when it does not. */
async function checkSession(): Promise<boolean> {
  try {
    // Reloads the signed-in user too: after a role change the console shows the new rights.
    if (!(await loadSession(true))) throw new ApiError(401, 'unauthorized', 'signed out');
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      disconnect();
      sessionExpired();
      toLogin();
      return false;
    }
    return true;
  }
}
