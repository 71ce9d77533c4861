import type { Capability, Core } from '../core.js';
import type { TransferManager } from '../files/transfer.js';
import type { AgentBinaryHandlers, ConsoleBinaryHandlers } from '../ws/handlers.js';
import { TerminalRepo } from './repo.js';
import { terminalRoutes } from './routes.js';
import { TerminalService } from './service.js';

type ConsoleTermTypes =
  | 'term.open'
  | 'term.attach'
  | 'term.detach'
  | 'term.resize'
  | 'term.close'
  | 'term.ack'
  | 'term.broadcast.open'
  | 'term.broadcast.member'
  | 'term.broadcast.close';

/** Remote terminals: the relay between consoles and agent PTYs, reattach, recording, history. */
export function createTerminals(
  core: Core,
  fileTransfers: () => TransferManager,
): Capability<'term.opened' | 'term.exit' | 'term.transfer', ConsoleTermTypes> & {
  agentTermData: AgentBinaryHandlers['termData'];
  agentFileData: AgentBinaryHandlers['fileData'];
  consoleTermData: ConsoleBinaryHandlers['termData'];
  service: TerminalService;
} {
  const repo = new TerminalRepo(core.db);
  const service = new TerminalService(core, repo, fileTransfers);
  let unsubscribe = () => {};
  core.metrics.sources.terminalSessionsOpen = () => service.sessions.size;
  core.fleet.onDisconnect((agentId, reason) => service.agentGone(agentId, `agent disconnected (${reason})`));
  // A new socket for an agent that still had sessions here means the old one died unnoticed: the
  // agent ended those shells when it lost the old socket.
  core.fleet.onConnect((agentId) => service.agentGone(agentId, 'agent reconnected'));
  return {
    service,
    agentHandlers: {
      'term.opened': (ctx, m) => service.agentOpened(ctx, m.sessionId, m.pid),
      'term.exit': (ctx, m) => service.agentExit(ctx, m),
      'term.transfer': (ctx, m) => service.transfers.result(ctx.agentId, m),
    },
    consoleHandlers: {
      'term.open': (ch, m) => service.open(ch, m),
      'term.attach': (ch, m) => service.attach(ch, m),
      'term.detach': (ch, m) => service.detachRequest(ch, m.sessionId),
      'term.resize': (ch, m) => service.resize(ch, m),
      'term.close': (ch, m) => service.closeRequest(ch, m.sessionId),
      'term.ack': (ch, m) => service.ack(ch, m),
      'term.broadcast.open': (ch, m) => service.broadcasts.open(ch, m),
      'term.broadcast.member': (ch, m) => service.broadcasts.member(ch, m),
      'term.broadcast.close': (ch, m) => service.broadcasts.close(ch, m.broadcastId),
    },
    agentTermData: (ctx, sessionId, data) => service.agentData(ctx, sessionId, data),
    agentFileData: (ctx, transferId, offset, data) => service.transfers.data(ctx.agentId, transferId, offset, data),
    consoleTermData: (ch, sessionId, data) => service.input(ch, sessionId, data),
    routes: terminalRoutes(core, repo, service),
    start: async () => {
      service.remote.start();
      // A user who lost rights (disabled, password reset, demoted) loses the shells kept for their
      // reattach too, not only those their open sockets control.
      unsubscribe = core.bus.subscribe('auth.changed', (ev) => {
        if (ev.kind === 'user.changed' && ev.rightsReduced) service.endSessionsOf(ev.userId, 'session ended');
      });
      const n = await repo.closeDangling(core.config.nodeId, Date.now(), 'server restart');
      if (n) core.log.info({ closed: n }, 'closed terminal sessions left open by the previous run');
    },
    stop: () => {
      unsubscribe();
      service.remote.stop();
      return service.stop();
    },
  };
}
