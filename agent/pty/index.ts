import { createRequire } from 'node:module';
import type * as NodePty from 'node-pty';
import type { AgentCapability, AgentContext } from '../capability.js';
import { terminalDenial } from '../../protocol/index.js';
import { LoginError, loginSpec } from './login.js';
import { PtySession } from './session.js';

type PtyModule = typeof NodePty;
let ptyModule: PtyModule | null = null;
/** node-pty is native and external to the bundle: loaded on first use, from node_modules next to dist/. */
function loadPty(): PtyModule {
  ptyModule ??= createRequire(import.meta.url)('node-pty') as PtyModule;
  return ptyModule;
}

/** PTY terminals: login shells on node-pty, flow controlled, with limits (sessions per agent, idle timeout). */
export function createPtyHost(ctx: AgentContext): AgentCapability<'term.open' | 'term.resize' | 'term.close' | 'term.ack'> & {
  onTermData(sessionId: string, data: Uint8Array): void;
  count(): number;
  /** The pid of a session's shell (file transfer reads its current directory), null when not here. */
  pidOf(sessionId: string): number | null;
} {
  const { cfg, log, link } = ctx;
  const sessions = new Map<string, PtySession>();
  /** The user each session's shell runs as (a tightened policy's runAs ends the others). */
  const users = new Map<string, string>();
  const limits = {
    idleTimeoutMs: cfg.terminalIdleTimeoutSec * 1000,
    highWatermark: cfg.terminalHighWatermark,
    lowWatermark: cfg.terminalLowWatermark,
  };
  const refuse = (sessionId: string, code: string, reason: string) =>
    void link.send({ type: 'term.exit', sessionId, exitCode: null, signal: null, reason: reason.slice(0, 255), code });

  const closeAll = (reason: string) => {
    for (const s of sessions.values()) s.close(reason);
  };

  return {
    handlers: {
      'term.open': (m) => {
        if (sessions.has(m.sessionId)) return refuse(m.sessionId, 'conflict', 'session id already in use');
        if (sessions.size >= cfg.terminalMaxSessions) {
          return refuse(m.sessionId, 'limit_exceeded', `this agent already hosts ${cfg.terminalMaxSessions} terminal sessions (terminalMaxSessions)`);
        }
        // The host's policy wins over whatever the server asked for.
        const policy = ctx.policy().view;
        const denied =
          terminalDenial(policy) ??
          (policy.runAs && m.user && m.user !== policy.runAs ? `host policy runs terminals as ${policy.runAs} only, not ${m.user}` : null);
        if (denied) {
          log.warn({ sessionId: m.sessionId, reason: denied }, 'terminal refused by host policy');
          return refuse(m.sessionId, 'policy_denied', denied);
        }
        let session: PtySession;
        let user: string;
        try {
          const spec = loginSpec({
            user: policy.runAs ?? m.user ?? cfg.terminalUser,
            shell: m.shell ?? cfg.shell,
            home: cfg.terminalHome,
            agentEnv: process.env,
          });
          const pty = loadPty().spawn(spec.file, spec.args, {
            name: 'xterm-256color',
            cols: m.cols,
            rows: m.rows,
            cwd: spec.cwd,
            env: spec.env,
            encoding: null,
          });
          // The idle timeout is the live setting when the session opens (server config, capped by policy).
          session = new PtySession(m.sessionId, pty, link, { ...limits, idleTimeoutMs: ctx.settings().terminalIdleTimeoutSec * 1000 }, (s, exit) => {
            sessions.delete(s.id);
            users.delete(s.id);
            log.info({ sessionId: s.id, exitCode: exit.exitCode, signal: exit.signal, reason: exit.reason }, 'terminal closed');
            link.send({ type: 'term.exit', sessionId: s.id, exitCode: exit.exitCode, signal: exit.signal, reason: exit.reason.slice(0, 255) });
          });
          log.info({ sessionId: m.sessionId, pid: pty.pid, user: spec.user, shell: spec.shell }, 'terminal opened');
          user = spec.user;
        } catch (err) {
          const msg = err instanceof LoginError ? err.message : `could not start the shell: ${(err as Error).message}`;
          log.warn({ sessionId: m.sessionId, err: msg }, 'terminal refused');
          return refuse(m.sessionId, 'unavailable', msg);
        }
        sessions.set(m.sessionId, session);
        users.set(m.sessionId, user);
        link.send({ type: 'term.opened', sessionId: m.sessionId, pid: session.pid });
      },
      'term.resize': (m) => sessions.get(m.sessionId)?.resize(m.cols, m.rows),
      'term.close': (m) => {
        const s = sessions.get(m.sessionId);
        if (s) s.close(m.reason);
        else refuse(m.sessionId, 'not_found', 'no such session');
      },
      'term.ack': (m) => sessions.get(m.sessionId)?.ack(m.bytes),
    },
    onTermData: (sessionId, data) => sessions.get(sessionId)?.input(data),
    onPolicy(policy) {
      const denied = terminalDenial(policy.view);
      for (const [id, s] of sessions) {
        const user = users.get(id);
        const why = denied ?? (policy.view.runAs && user !== policy.view.runAs ? `host policy now runs terminals as ${policy.view.runAs}` : null);
        if (!why) continue;
        log.warn({ sessionId: id, reason: why }, 'host policy changed: closing a terminal it forbids');
        s.close(`host policy changed: ${why}`);
      }
    },
    count: () => sessions.size,
    pidOf: (sessionId) => sessions.get(sessionId)?.pid ?? null,
    // The server ends a disconnected agent's sessions (their consoles are told), so the shells go too.
    onDisconnected: () => closeAll('agent disconnected'),
    stop: async () => {
      const ending = [...sessions.values()];
      closeAll('agent shutdown');
      const deadline = Date.now() + 3000;
      while (sessions.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (ending.length) log.info({ sessions: ending.length, left: sessions.size }, 'terminals closed for shutdown');
    },
  };
}
