/**
 * Terminal tabs and their sessions. Tabs survive a reload: their session ids are kept in
 * sessionStorage and re-attached with `term.attach` (the server replays its scrollback ring).
 * After the console socket reconnects, every live tab re-attaches the same way.
 *
 * Flow control: output is acknowledged only once xterm.js has written it (its write callback),
 * so a flood is paused at the agent instead of piling up in the browser.
 *
 * Broadcast: `openBroadcast` opens one tab per agent as a group (`term.broadcast.open`); a
 * joined pane's keystrokes go to the server once, under the broadcast id, and the server fans
 * them out to every joined session. A pane that left types into its own session only. The group
 * lives as long as this socket: after a reload its sessions come back as ordinary tabs.
 *
 * Cluster: a tab asks for its session `direct`; when another server node holds the agent and gave
 * its address (MUSTER_NODE_URL), the server answers `term.elsewhere` and the tab opens (or
 * attaches) its session on a socket of that node, so the output is not relayed twice. A node this
 * page cannot reach is left to the relay (the same message without `direct`, on the main socket);
 * a node socket that closes sends its tabs back through the main socket, which says again where
 * each session is.
 */
import { effectScope, reactive } from 'vue';
import type { Terminal } from '@xterm/xterm';
import { TERM_ACK_BYTES, TERM_CONSOLE_ACK_DELAY_MS } from '../../../../protocol/flow-control';
import { encodeTermData } from '../../../../protocol/frames';
import type { ConsoleToServer, ServerToConsole } from '../../../../protocol/console-messages';
import { closeNodeSocket, nodeSocket, onFrame, onMessage, onReady, send, sendBinary, type NodeSocket } from '../../composables/socket';

export type TabState = 'opening' | 'open' | 'closed';
export interface Tab {
  key: string;
  agentId: string;
  agentName: string;
  sessionId: string | null;
  mode: 'control' | 'watch';
  state: TabState;
  /** Why it closed (shown in the tab and in the terminal). */
  reason: string;
  /** Part of the broadcast grid (not persisted: a reloaded pane is an ordinary tab). */
  broadcast?: boolean;
  /** In the broadcast now (typing in any joined pane reaches every joined pane). */
  joined?: boolean;
  /** The address of the server node whose socket carries this session (cluster), if not the main socket. */
  via?: string;
}

export interface BroadcastState {
  /** Correlation ref of the `term.broadcast.open` (null: no broadcast). */
  ref: string | null;
  /** The server's broadcast id, once it answered. */
  id: string | null;
  /** Why the broadcast was refused (shown instead of the grid). */
  error: string;
  /** The server's pane limit, as it last said. */
  maxPanes: number | null;
}

const STORE = 'muster.terminals';

export const tabs = reactive<Tab[]>([]);
export const broadcast = reactive<BroadcastState>({ ref: null, id: null, error: '', maxPanes: null });
const terms = new Map<string, Terminal>();
const refs = new Map<string, string>(); // ref -> tab key
const pendingAck = new Map<string, { bytes: number; timer: ReturnType<typeof setTimeout> | null }>();
/** Sockets on other server nodes in use, by their address. */
const nodes = new Map<string, NodeSocket>();
let seq = 0;
let started = false;
/** Tabs whose terminal was shown before: a new view of them needs the scrollback replayed. */
const shownBefore = new Set<string>();

function persist(): void {
  const live = tabs
    .filter((t) => t.state !== 'closed' && t.sessionId)
    .map((t) => ({ sessionId: t.sessionId, agentId: t.agentId, agentName: t.agentName, mode: t.mode }));
  sessionStorage.setItem(STORE, JSON.stringify(live));
}
const tabBySession = (id: string) => tabs.find((t) => t.sessionId === id && t.state !== 'closed');
const newRef = (key: string) => {
  const ref = `t${Date.now().toString(36)}${++seq}`;
  refs.set(ref, key);
  return ref;
};

/** Sends on the socket that carries the tab's session (its node's, or the main one). */
function sendTo(t: Tab | undefined, msg: ConsoleToServer): boolean {
  const n = t?.via ? nodes.get(t.via) : undefined;
  return n ? n.send(msg) : send(msg);
}

/** Closes a node's socket once no live tab uses it. */
function release(url: string | undefined): void {
  if (!url || tabs.some((t) => t.via === url && t.state !== 'closed')) return;
  nodes.delete(url);
  closeNodeSocket(url);
}

/** A node socket closed: its tabs go back through the main socket (which says where each session is now). */
function nodeLost(url: string): void {
  nodes.delete(url);
  for (const t of tabs) {
    if (t.via !== url) continue;
    t.via = undefined;
    if (t.state === 'closed') continue;
    if (t.sessionId) attach(t);
    else ended(t, 'the connection to the server node holding the agent was lost before the session opened');
  }
}

/** `term.elsewhere`: the same open or attach, on a socket of the node that holds the agent (or relayed, when this page cannot reach it). */
async function follow(t: Tab, m: Extract<ServerToConsole, { type: 'term.elsewhere' }>): Promise<void> {
  const n = await nodeSocket(m.url, () => nodeLost(m.url));
  if (t.state === 'closed' || !tabs.includes(t)) return release(n?.url);
  if (n) {
    nodes.set(m.url, n);
    t.via = m.url;
  } else t.via = undefined;
  const term = terms.get(t.key);
  const sent = m.sessionId
    ? sendTo(t, { type: 'term.attach', ref: newRef(t.key), sessionId: m.sessionId, mode: t.mode })
    : sendTo(t, { type: 'term.open', ref: newRef(t.key), agentId: t.agentId, cols: term?.cols ?? 80, rows: term?.rows ?? 24 });
  if (!sent) ended(t, 'not connected to the server');
}

function ack(sessionId: string, bytes: number): void {
  let p = pendingAck.get(sessionId);
  if (!p) pendingAck.set(sessionId, (p = { bytes: 0, timer: null }));
  p.bytes += bytes;
  const flush = () => {
    const q = pendingAck.get(sessionId);
    if (!q) return;
    if (q.timer) clearTimeout(q.timer);
    q.timer = null;
    if (q.bytes > 0) sendTo(tabBySession(sessionId), { type: 'term.ack', sessionId, bytes: q.bytes });
    q.bytes = 0;
  };
  // Batched as protocol/flow-control.ts says (the agent's watermarks leave room for two batches).
  if (p.bytes >= TERM_ACK_BYTES) flush();
  else if (!p.timer) p.timer = setTimeout(flush, TERM_CONSOLE_ACK_DELAY_MS);
}

function attach(t: Tab): void {
  if (!t.sessionId) return;
  t.state = 'opening';
  // The server replays its scrollback on attach: start from a clean screen so nothing doubles.
  terms.get(t.key)?.reset();
  const n = t.via ? nodes.get(t.via) : undefined;
  if (n?.isReady && n.send({ type: 'term.attach', ref: newRef(t.key), sessionId: t.sessionId, mode: t.mode })) return;
  t.via = undefined;
  send({ type: 'term.attach', ref: newRef(t.key), sessionId: t.sessionId, mode: t.mode, direct: true });
}

function ended(t: Tab, reason: string): void {
  if (t.state === 'closed') return;
  t.state = 'closed';
  t.reason = reason;
  const term = terms.get(t.key);
  term?.write(`\r\n\x1b[1;33m[session ended: ${reason.replace(/[\x00-\x1f]/g, ' ')}]\x1b[0m\r\n`);
  persist();
  release(t.via);
}

/** Wires the manager to the console socket and restores the tabs of this browser tab (once). */
export function startTerminals(): void {
  if (started) return;
  started = true;
  // Page-lifetime subscriptions: a detached scope, so no component's unmount disposes them.
  effectScope(true).run(() => {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE) ?? '[]') as Array<{
        sessionId: string;
        agentId: string;
        agentName: string;
        mode: 'control' | 'watch';
      }>;
      for (const s of saved)
        tabs.push({ key: `k${++seq}`, agentId: s.agentId, agentName: s.agentName, sessionId: s.sessionId, mode: s.mode, state: 'opening', reason: '' });
    } catch {
      sessionStorage.removeItem(STORE);
    }
    onReady(() => {
      // A broadcast group lives with the socket it was opened on: after a reconnect its shells
      // are reattached one by one, as ordinary tabs.
      if (broadcast.ref) {
        for (const t of tabs) {
          if (!t.broadcast) continue;
          t.broadcast = false;
          t.joined = false;
        }
        Object.assign(broadcast, { ref: null, id: null, error: 'the connection was lost, which ended the broadcast; its shells are in Terminals' });
      }
      for (const t of tabs) {
        if (t.state === 'closed') continue;
        // Carried by another node's socket, which is still up: nothing to do.
        if (t.via && nodes.get(t.via)?.isReady) continue;
        if (t.sessionId) attach(t);
        else ended(t, 'connection lost before the session opened');
      }
    });
    onMessage('term.opened', (m) => {
      const key = refs.get(m.ref);
      refs.delete(m.ref);
      const t = tabs.find((x) => x.key === key);
      if (!t) return;
      t.sessionId = m.sessionId;
      t.state = 'open';
      t.mode = m.mode;
      const term = terms.get(t.key);
      if (term && m.mode === 'control' && (term.cols !== m.cols || term.rows !== m.rows))
        sendTo(t, { type: 'term.resize', sessionId: m.sessionId, cols: term.cols, rows: term.rows });
      persist();
    });
    onMessage('term.elsewhere', (m) => {
      const key = refs.get(m.ref);
      refs.delete(m.ref);
      const t = tabs.find((x) => x.key === key);
      if (t && t.state !== 'closed') void follow(t, m);
    });
    onMessage('term.closed', (m) => {
      const t = tabBySession(m.sessionId);
      if (t) ended(t, m.exitCode != null ? `${m.reason} (exit ${m.exitCode})` : m.reason);
    });
    onMessage('term.broadcast.opened', (m) => {
      if (m.ref !== broadcast.ref) return;
      broadcast.id = m.broadcastId;
      broadcast.maxPanes = m.maxPanes;
    });
    onMessage('term.broadcast.members', (m) => {
      if (m.broadcastId !== broadcast.id) return;
      const joined = new Set(m.joined);
      for (const t of tabs) if (t.broadcast && t.sessionId) t.joined = joined.has(t.sessionId);
    });
    onMessage('error', (m) => {
      if (!m.ref) return;
      if (m.ref === broadcast.ref) {
        // Refused as a whole (pane limit, role, terminal caps): no session was opened.
        broadcast.error = m.message;
        for (let i = tabs.length - 1; i >= 0; i--) if (tabs[i]!.broadcast) tabs.splice(i, 1);
        return;
      }
      const key = refs.get(m.ref);
      if (!key) return;
      refs.delete(m.ref);
      const t = tabs.find((x) => x.key === key);
      if (t) ended(t, m.message);
    });
    onFrame((f) => {
      if (f.op !== 'termData') return;
      const t = tabBySession(f.sessionId);
      const term = t && terms.get(t.key);
      if (!term) {
        // Nobody shows it (yet): still acknowledge so the agent is never stalled by a missing view.
        ack(f.sessionId, f.data.length);
        return;
      }
      const n = f.data.length;
      term.write(f.data.slice(), () => ack(f.sessionId, n));
    });
  });
}

/** Opens a new tab with a new shell on `agentId`. */
export function openTab(agentId: string, agentName: string, cols = 80, rows = 24): Tab {
  const t: Tab = { key: `k${++seq}`, agentId, agentName, sessionId: null, mode: 'control', state: 'opening', reason: '' };
  tabs.push(t);
  const tab = tabs[tabs.length - 1]!;
  if (!send({ type: 'term.open', ref: newRef(tab.key), agentId, cols, rows, direct: true })) ended(tab, 'not connected to the server');
  return tab;
}

/** Opens a broadcast grid: one new shell per agent, typed into together. Ends any previous broadcast. */
export function openBroadcast(agents: Array<{ id: string; name: string }>, cols = 80, rows = 24): void {
  endBroadcast(false);
  const ref = `b${Date.now().toString(36)}${++seq}`;
  Object.assign(broadcast, { ref, id: null, error: '', maxPanes: broadcast.maxPanes });
  agents.forEach((a, i) => {
    const key = `k${++seq}`;
    tabs.push({ key, agentId: a.id, agentName: a.name, sessionId: null, mode: 'control', state: 'opening', reason: '', broadcast: true, joined: true });
    refs.set(`${ref}/${i}`, key);
  });
  if (!send({ type: 'term.broadcast.open', ref, agentIds: agents.map((a) => a.id), cols, rows })) {
    for (const t of tabs) if (t.broadcast) ended(t, 'not connected to the server');
  }
}

/** A pane leaves or rejoins the broadcast (its shell stays open). */
export function setJoined(key: string, joined: boolean): void {
  const t = tabs.find((x) => x.key === key);
  if (!t?.broadcast || !t.sessionId || !broadcast.id) return;
  t.joined = joined;
  send({ type: 'term.broadcast.member', broadcastId: broadcast.id, sessionId: t.sessionId, joined });
}

/** Ends the broadcast; `closeShells`: its panes' sessions end too, else they become ordinary tabs. */
export function endBroadcast(closeShells: boolean): void {
  if (broadcast.id) send({ type: 'term.broadcast.close', broadcastId: broadcast.id });
  for (const t of [...tabs]) {
    if (!t.broadcast) continue;
    if (closeShells || t.state === 'closed') closeTab(t.key);
    else {
      t.broadcast = false;
      t.joined = false;
    }
  }
  Object.assign(broadcast, { ref: null, id: null, error: '' });
}

/** Attaches a tab to an existing session (reattach a detached one, or watch read-only as admin). */
export function attachTab(sessionId: string, agentId: string, agentName: string, mode: 'control' | 'watch'): Tab {
  const existing = tabBySession(sessionId);
  if (existing) return existing;
  tabs.push({ key: `k${++seq}`, agentId, agentName, sessionId, mode, state: 'opening', reason: '' });
  const tab = tabs[tabs.length - 1]!;
  attach(tab);
  return tab;
}

/** Closes a tab; a live controlled session ends at once (explicit close), a watch just leaves. */
export function closeTab(key: string): void {
  const i = tabs.findIndex((t) => t.key === key);
  if (i < 0) return;
  const t = tabs[i]!;
  if (t.sessionId && t.state !== 'closed') sendTo(t, { type: 'term.close', sessionId: t.sessionId });
  tabs.splice(i, 1);
  shownBefore.delete(key);
  persist();
  release(t.via);
}

/** Binds a mounted xterm to its tab: input, resize. Returns the unbind function. */
export function bindTerminal(key: string, term: Terminal): () => void {
  terms.set(key, term);
  const tab = tabs.find((t) => t.key === key);
  if (tab && shownBefore.has(key)) {
    // The view was left and came back: this xterm is new, so ask the server to replay the scrollback.
    if (tab.sessionId && tab.state === 'open') attach(tab);
    else if (tab.state === 'closed') term.write(`\x1b[1;33m[session ended: ${tab.reason.replace(/[\x00-\x1f]/g, ' ')}]\x1b[0m\r\n`);
  }
  shownBefore.add(key);
  const enc = new TextEncoder();
  const tabOf = () => tabs.find((t) => t.key === key);
  const input = (data: Uint8Array) => {
    const t = tabOf();
    if (!(t?.sessionId && t.state === 'open' && t.mode === 'control')) return;
    // A joined pane types into the whole broadcast: one frame, fanned out by the server.
    const frame = encodeTermData(t.broadcast && t.joined && broadcast.id ? broadcast.id : t.sessionId, data);
    const n = t.via ? nodes.get(t.via) : undefined;
    if (n) n.sendBinary(frame);
    else sendBinary(frame);
  };
  const d1 = term.onData((s) => input(enc.encode(s)));
  const d2 = term.onBinary((s) => input(Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff)));
  const d3 = term.onResize(({ cols, rows }) => {
    const t = tabOf();
    if (t?.sessionId && t.state === 'open' && t.mode === 'control') sendTo(t, { type: 'term.resize', sessionId: t.sessionId, cols, rows });
  });
  return () => {
    d1.dispose();
    d2.dispose();
    d3.dispose();
    if (terms.get(key) === term) terms.delete(key);
  };
}
