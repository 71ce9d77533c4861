import path from 'node:path';
import type { AgentMessage } from '../../protocol/index.js';
import { selectorLimits } from '../config/config.js';
import type { Capability, Core } from '../core.js';
import type { ExecService } from '../exec/service.js';
import { ContentStore } from './content.js';
import { DistributionEngine } from './engine.js';
import { fileRoutes } from './routes.js';
import { FileRepo } from './repo.js';
import { TransferManager } from './transfer.js';

/**
 * File distribution (issue 13): managed files with revisions (content under dataDir/files),
 * distributions in waves streamed to agents with flow control, and the drift agents report.
 */
export function createFiles(
  core: Core,
  exec: ExecService,
): Capability<'file.ack' | 'file.result' | 'file.state', never> & {
  /** Whether this agent's reply names a transfer a running distribution holds for it. */
  holds(agentId: string, transferId: string): boolean;
  transfers: TransferManager;
} {
  const { config, fleet } = core;
  const log = core.log.child({ component: 'files' });
  const repo = new FileRepo(core.db);
  // In a cluster, revisions are also kept in the NATS object store, where every node reads them.
  const content = new ContentStore(path.join(core.dataDir, 'files'), config.fileMaxBytes, core.disk, 'MUSTER_FILE_MAX_BYTES', core.nodes.blobs);
  // eslint-disable-next-line prefer-const -- the transfer manager reports read errors to the engine built after it
  let engine!: DistributionEngine;
  const transfers = new TransferManager(
    fleet,
    {
      chunkBytes: config.fileChunkBytes,
      windowBytes: config.fileWindowBytes,
      maxInflightBytes: config.fileInflightBytes,
      cacheBytes: config.fileCacheBytes,
    },
    (err, transferId) => {
      log.error({ err, transferId }, 'could not read revision content');
      engine.transferFailed(transferId, err);
    },
  );
  core.metrics.sources.fileBytes = () => ({ sent: transfers.bytesSent, read: transfers.bytesRead });
  engine = new DistributionEngine({
    repo,
    content,
    transfers,
    fleet,
    leases: core.leases,
    link: core.nodes.link,
    agentNode: (id) => core.nodes.agentNode(id),
    bus: core.bus,
    log,
    applyTimeoutSec: config.fileApplyTimeoutSec,
    retry: { initialMs: config.dbRetryInitialMs, maxMs: config.dbRetryMaxMs },
    runPostCommand: async (command, agentId, actor, file) => {
      const task = await exec.create(
        {
          script: command,
          interpreter: 'sh',
          args: [],
          env: { MUSTER_FILE_PATH: file.path },
          cwd: null,
          timeoutSec: 300,
          signature: null,
          targets: { agentIds: [agentId] },
          offline: 'skip',
          queueTtlSec: 0,
        },
        actor,
      );
      return task.id;
    },
  });

  /** An agent's view of its managed files: drift, and files the server no longer manages (forgotten). */
  const onState = async (agentId: string, m: AgentMessage<'file.state'>): Promise<void> => {
    const now = Date.now();
    const known = await repo.fileStates(m.files.map((f) => f.fileId));
    for (const it of m.files) {
      if (known.get(it.fileId) !== true) {
        fleet.send(agentId, { type: 'file.forget', fileId: it.fileId });
        continue;
      }
      await repo.upsertHost({
        fileId: it.fileId,
        agentId,
        revision: it.revision,
        sha256: it.sha256,
        state: it.state,
        reason: it.reason ?? null,
        updatedAt: now,
      });
      if (it.state !== 'ok') log.info({ agentId, fileId: it.fileId, path: it.path, state: it.state, reason: it.reason }, 'managed file drifted');
    }
    if (m.full) {
      const reported = new Set(m.files.map((f) => f.fileId));
      for (const h of await repo.hostsOfAgent(agentId)) {
        if (reported.has(h.fileId) || h.state === 'missing') continue;
        await repo.upsertHost({ ...h, state: 'missing', reason: 'the agent no longer records this file (its state directory was reset?)', updatedAt: now });
      }
    }
  };

  return {
    agentHandlers: {
      'file.ack': (ctx, m) => engine.ack(ctx.agentId, m),
      'file.result': (ctx, m) =>
        engine.result(ctx.agentId, m).catch((err: unknown) => ctx.log.error({ err, transferId: m.transferId }, 'could not record a file result')),
      'file.state': (ctx, m) => onState(ctx.agentId, m).catch((err: unknown) => ctx.log.error({ err }, 'could not record file state')),
    },
    consoleHandlers: {},
    routes: fileRoutes({ repo, content, engine, fleet, audit: core.audit, selectorLimits: selectorLimits(config), maxBytes: config.fileMaxBytes }),
    holds: (agentId, transferId) => engine.holds(agentId, transferId),
    transfers,
    start: () => engine.start(),
    stop: () => engine.stop(),
  };
}
