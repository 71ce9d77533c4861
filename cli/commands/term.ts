import { CloseCode, encodeTermData, TERM_ACK_BYTES, type ServerToConsole } from '../../protocol/index.js';
import { clientFrom } from '../client.js';
import { CliError, str, type Command } from '../command.js';
import { ConsoleSocket } from '../socket.js';
import { resolveAgents } from './exec.js';

/** Ctrl-] (as telnet): leaves the session without ending the shell. */
const DETACH_KEY = 0x1d;
const CTRL_C = 0x03;

/**
 * `muster term AGENT`: an interactive shell on an agent in the local terminal (raw mode; the
 * remote size follows the local one on SIGWINCH). Flow control is end to end: output bytes are
 * acknowledged only once written to the local terminal, so a slow terminal slows the remote PTY
 * instead of filling memory anywhere. Ctrl-] detaches; the shell lives on for the server's detach
 * timeout and `--attach SESSION` takes it back. `--watch SESSION` follows a session read-only.
 */
export const term: Command = {
  name: 'term',
  summary: 'interactive terminal on an agent (Ctrl-] detaches)',
  usage: 'muster term AGENT | muster term --attach SESSION | muster term --watch SESSION   (Ctrl-] detaches)',
  options: { attach: { type: 'string' }, watch: { type: 'string' } },
  run: async (ctx) => {
    const { values, positionals, err } = ctx;
    const attach = str(values, 'attach');
    const watch = str(values, 'watch');
    const agent = positionals[0];
    if ([attach, watch, agent].filter((x) => x !== undefined).length !== 1 || positionals.length > 1) {
      throw new CliError('give exactly one of AGENT, --attach SESSION or --watch SESSION');
    }
    const c = clientFrom(ctx);
    const agentId = agent !== undefined ? (await resolveAgents(c, [agent]))[0]! : undefined;
    const stdin = process.stdin;
    const stdout = process.stdout;
    const size = (): { cols: number; rows: number } => ({
      cols: Math.min(1000, Math.max(1, stdout.columns || 80)),
      rows: Math.min(1000, Math.max(1, stdout.rows || 24)),
    });

    let sock = await ConsoleSocket.connect(c);
    const ref = 'cli';
    // `direct`: in a cluster whose nodes have MUSTER_NODE_URL, the node holding the agent is named
    // (term.elsewhere) and the session is opened on a socket of that node, not relayed.
    const ask = (s: ConsoleSocket, direct: boolean) => {
      const answer = s.next((m) => (m.type === 'term.opened' || m.type === 'term.elsewhere' || m.type === 'error') && m.ref === ref);
      if (agentId !== undefined) s.send({ type: 'term.open', ref, agentId, ...size(), direct });
      else s.send({ type: 'term.attach', ref, sessionId: (attach ?? watch)!, mode: attach !== undefined ? 'control' : 'watch', direct });
      return answer;
    };
    let opened: ServerToConsole;
    try {
      opened = await ask(sock, true);
      if (opened.type === 'term.elsewhere') {
        const where = opened;
        const there = await ConsoleSocket.connect(c, where.url).catch((e: Error) => {
          err(`[server node ${where.node} not reachable at ${where.url} (${e.message}); relayed through ${c.server}]\r\n`);
          return null;
        });
        if (there) {
          sock.close();
          sock = there;
        }
        opened = await ask(sock, false);
      }
    } catch (e) {
      sock.close();
      throw e;
    }
    if (opened.type === 'error') {
      sock.close();
      throw new Error(`${opened.message} (${opened.code})`);
    }
    if (opened.type !== 'term.opened') throw new Error('unexpected answer');
    const sessionId = opened.sessionId;
    const control = opened.mode === 'control';
    err(`[session ${sessionId}${control ? '' : ', read-only'}; Ctrl-] detaches]\r\n`);

    return await new Promise<number>((resolve) => {
      let ended = false;
      let toldReadOnly = false;
      let unacked = 0;
      let ackQueued = false;
      const flushAcks = (): void => {
        ackQueued = false;
        if (unacked > 0 && !ended) sock.send({ type: 'term.ack', sessionId, bytes: unacked });
        unacked = 0;
      };
      const acked = (n: number): void => {
        unacked += n;
        // Batched as protocol/flow-control.ts says: at TERM_ACK_BYTES or on the next turn of the event loop.
        if (unacked >= TERM_ACK_BYTES) flushAcks();
        else if (!ackQueued) {
          ackQueued = true;
          setImmediate(flushAcks);
        }
      };
      const offFrame = sock.onFrame((f) => {
        if (f.op !== 'termData' || f.sessionId !== sessionId) return;
        const n = f.data.length;
        // The write callback runs once the bytes are handed to the terminal: only then are they acknowledged.
        stdout.write(f.data, () => acked(n));
      });
      const offMsg = sock.onMessage((m) => {
        if (m.type === 'term.closed' && m.sessionId === sessionId) {
          const code = typeof m.exitCode === 'number' ? m.exitCode : m.reason === 'stopped watching' ? 0 : 1;
          end(`[session ended: ${m.reason}${typeof m.exitCode === 'number' ? `, exit ${m.exitCode}` : ''}]`, code);
        } else if (m.type === 'error' && !m.ref) {
          err(`\r\n[${m.message}]\r\n`);
        }
      });
      const onResize = (): void => {
        if (control) sock.send({ type: 'term.resize', sessionId, ...size() });
      };
      const onInput = (d: Buffer): void => {
        const k = d.indexOf(DETACH_KEY);
        const upTo = k >= 0 ? d.subarray(0, k) : d;
        if (control && upTo.length) sock.sendBinary(encodeTermData(sessionId, upTo));
        if (!control && upTo.length && !toldReadOnly) {
          // Keys of a watcher reach no shell; say so once rather than let them vanish silently.
          toldReadOnly = true;
          err('\r\n[read-only: keys are not sent; Ctrl-] or Ctrl-C stops watching]\r\n');
        }
        if (!control && upTo.includes(CTRL_C)) {
          sock.send({ type: 'term.close', sessionId });
          end('[stopped watching]', 0);
          return;
        }
        if (k >= 0) {
          sock.send({ type: 'term.detach', sessionId });
          end(control ? `[detached; the shell lives on for a while: muster term --attach ${sessionId}]` : '[stopped watching]', 0);
        }
      };
      function end(msg: string, code: number): void {
        if (ended) return;
        flushAcks();
        ended = true;
        offFrame();
        offMsg();
        stdin.off('data', onInput);
        stdout.off('resize', onResize);
        if (stdin.isTTY) stdin.setRawMode(false);
        stdin.pause();
        err(`\r\n${msg}\r\n`);
        // A close frame follows what was queued before it: term.detach / term.close arrive first.
        sock.close();
        resolve(code);
      }
      void sock.closed.then((cl) =>
        end(
          cl.code === CloseCode.sessionEnded
            ? // The token was revoked or expired, or its owner changed: the server ended the shell too.
              `[session ended (${cl.reason || 'credentials no longer valid'}); the shell was closed]`
            : `[connection lost (${cl.code}${cl.reason ? ` ${cl.reason}` : ''})${control ? `; the shell lives on for a while: muster term --attach ${sessionId}` : ''}]`,
          1,
        ),
      );
      if (stdin.isTTY) stdin.setRawMode(true);
      stdin.on('data', onInput);
      stdin.resume();
      stdout.on('resize', onResize);
      // The local size may have changed while the session opened (or differ from the attached one).
      if (control && (opened.cols !== size().cols || opened.rows !== size().rows)) onResize();
    });
  },
};
