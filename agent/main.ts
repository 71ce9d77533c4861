import os from 'node:os';
import { HEARTBEAT_RTT_CAPABILITY, HEARTBEAT_RTT_MAX_MS, PROTOCOL_VERSION, type AgentMessage, type AgentSettings, type Hello } from '../protocol/index.js';
import { AgentConfigError, loadAgentConfig } from './config.js';
import type { AgentContext, Link } from './capability.js';
import { ServerConnection, type ServerHandlers } from './connection.js';
import { createExecutor } from './executor/index.js';
import { createFiles } from './files/index.js';
import { startHealth } from './health.js';
import { liveSettings, type LiveSettings } from './live-config.js';
import { createAgentLog } from './log.js';
import { loadPolicy, type Policy } from './policy.js';
import { createPtyHost } from './pty/index.js';
import { createTermTransfers } from './pty/transfer.js';
import { resolveUser } from './pty/login.js';
import { AgentState } from './state.js';
import { collectMetrics, CpuMeter, hostIps, osRelease } from './sysinfo.js';
import { createUpdater } from './updater/index.js';
import { AGENT_BROKEN, AGENT_VERSION } from './version.js';

/** Agent composition root: config, state, connection, capabilities, signals. */
async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--version')) {
    process.stdout.write(`${AGENT_VERSION}\n`);
    return;
  }
  if (AGENT_BROKEN) {
    process.stderr.write('muster-agent: this build is deliberately broken (MUSTER_AGENT_BROKEN=1); exiting\n');
    process.exit(1);
  }
  let cfg;
  try {
    cfg = loadAgentConfig(argv, process.env);
  } catch (err) {
    if (err instanceof AgentConfigError) {
      process.stderr.write(`muster-agent: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const state = new AgentState(cfg.stateDir);
  // The agent id is known from the state dir before anything logs: bound on every line.
  const log = createAgentLog(cfg.logLevel, { agentId: state.agentId });
  const cpu = new CpuMeter();
  const startedAt = Date.now();
  const counters = { heartbeats_sent_total: 0, heartbeats_acked_total: 0, connects_total: 0, disconnects_total: 0, config_applied_total: 0 };
  let heartbeatTimer: NodeJS.Timeout | undefined;
  /**
   * Every ACK_EVERY-th heartbeat (the first after each welcome included) carries a sequence number,
   * and the server acknowledges it (shown on /health). The acks are the agent's proof that the
   * server is alive (connection.ts pings only a server silent for as long), so one per ping
   * interval is enough: an ack per heartbeat cost the server a socket write per heartbeat, the
   * largest per-agent cost of a quiet fleet after reading the heartbeat itself.
   */
  const ACK_EVERY = 3;
  let sinceAck = 0;
  const hb = {
    intervalMs: null as number | null,
    seq: 0,
    lastSentAt: null as number | null,
    lastSentSeq: null as number | null,
    lastAckedAt: null as number | null,
    lastAckedSeq: null as number | null,
    /** performance.now() when the heartbeat carrying lastSentSeq went out. */
    lastSentPerf: 0,
    /**
     * Round trip of the last acknowledged heartbeat (ms), reported once with the next heartbeat: the
     * server's RTT metric, without a WebSocket ping of its own per agent (HEARTBEAT_RTT_CAPABILITY).
     */
    rttToReport: null as number | null,
  };

  // The socket is created below; capabilities reach it through this link.
  // eslint-disable-next-line prefer-const -- assigned once below, after the handlers that close over it
  let conn!: ServerConnection;
  const link: Link = {
    send: (m) => conn.send(m),
    sendBinary: (b, o) => conn.sendBinary(b, o),
    bufferedAmount: () => conn.bufferedAmount(),
    connected: () => conn.connected,
  };
  // The host's own policy: read from a file the server cannot write, enforced here on every command.
  const readPolicy = (): Policy => {
    const p = loadPolicy(cfg.policy);
    if (p.view.source === 'lockdown') {
      log.error(
        { policy: cfg.policy, err: p.view.error },
        'HOST POLICY FILE IGNORED: it is unsafe or invalid; refusing every script and terminal until it is fixed (then SIGHUP)',
      );
    } else {
      const v = p.view;
      log.info(
        {
          policy: v.path,
          source: v.source,
          terminals: v.terminals,
          exec: v.exec,
          interpreters: v.interpreters,
          runAs: v.runAs,
          requireSignedScripts: v.requireSignedScripts,
          keys: v.scriptPublicKeys.length,
          allowedPaths: v.allowedPaths,
        },
        'host policy',
      );
      // Checked again at each use (the user may be created later); said now so a typo is seen at once.
      if (v.runAs) {
        try {
          resolveUser(v.runAs, 'run scripts and terminals');
        } catch (err) {
          log.error({ policy: v.path, runAs: v.runAs, err }, 'host policy runAs cannot be used: scripts and terminals will fail until it can');
        }
      }
    }
    return p;
  };
  let policy = readPolicy();

  // Live configuration: the server's settings over the agent's own config, the host policy over both.
  let localCfg = cfg;
  let pushed: AgentSettings = {};
  let pushedRevision: string | null = null;
  let pushedAt: number | null = null;
  let live: LiveSettings = liveSettings(localCfg, localCfg.labels, policy.view, pushed);
  /** The heartbeat interval the last welcome named (null while not connected). */
  let welcomeIntervalMs: number | null = null;
  const effective = () => ({
    heartbeatIntervalSec: live.heartbeatIntervalSec ?? (welcomeIntervalMs !== null ? welcomeIntervalMs / 1000 : null),
    logLevel: live.logLevel,
    labels: live.labels,
    terminalIdleTimeoutSec: live.terminalIdleTimeoutSec,
    execBufferBytes: live.execBufferBytes,
  });
  /** Recomputes what is in force and applies what changed: log level, heartbeat timer, labels (reported to the server). */
  const applyLive = (): void => {
    const prev = live;
    live = liveSettings(localCfg, localCfg.labels, policy.view, pushed);
    if (log.level !== live.logLevel) log.level = live.logLevel;
    if (prev.heartbeatIntervalSec !== live.heartbeatIntervalSec && welcomeIntervalMs !== null) startHeartbeat();
    if (JSON.stringify(prev.labels) !== JSON.stringify(live.labels)) conn.send({ type: 'labels', labels: live.labels });
  };
  const sendApplied = (): void => {
    if (pushedRevision === null) return;
    if (conn.send({ type: 'config.applied', revision: pushedRevision, effective: effective(), notes: live.notes })) counters.config_applied_total++;
  };

  const ctx: AgentContext = {
    cfg,
    log,
    state,
    link,
    serverUrl: () => conn.currentUrl,
    policy: () => policy,
    settings: () => live,
    exit: (reason, code) => shutdown(reason, code),
  };
  const executor = createExecutor(ctx);
  const pty = createPtyHost(ctx);
  const updater = createUpdater(ctx, { runningExecutions: () => executor.running() });
  const files = createFiles(ctx);
  const termFiles = createTermTransfers(ctx, (sessionId) => pty.pidOf(sessionId));
  const capabilities = [executor, pty, updater, files, termFiles];
  const running = { executions: () => executor.running(), terminals: () => pty.count() };

  const buildHello = (): Hello => ({
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    agentVersion: AGENT_VERSION,
    agentId: state.agentId,
    name: cfg.name,
    hostname: os.hostname(),
    ips: hostIps(),
    externalIp: null,
    platform: process.platform,
    arch: process.arch,
    os: osRelease(),
    cpus: os.cpus().length,
    memoryBytes: os.totalmem(),
    labels: live.labels,
    capabilities: ['exec', 'pty', 'files', 'config', 'term-files', HEARTBEAT_RTT_CAPABILITY, ...(cfg.installRoot ? ['update'] : [])],
    executions: executor.helloExecutions(),
    policy: policy.view,
  });

  const handlers: ServerHandlers = {
    error: (m) => log.warn({ code: m.code, message: m.message, ref: m.ref }, 'server reported an error'),
    'heartbeat.ack': (m) => {
      if (m.seq === hb.lastSentSeq && hb.lastAckedSeq !== m.seq) {
        hb.rttToReport = Math.min(HEARTBEAT_RTT_MAX_MS, Math.round((performance.now() - hb.lastSentPerf) * 100) / 100);
      }
      hb.lastAckedAt = Date.now();
      hb.lastAckedSeq = m.seq;
      counters.heartbeats_acked_total++;
    },
    config: (m) => {
      pushed = m.settings;
      pushedRevision = m.revision;
      pushedAt = Date.now();
      applyLive();
      log.info(
        { revision: m.revision, settings: Object.keys(m.settings), notes: live.notes, effective: { ...effective(), labels: undefined } },
        'live configuration applied',
      );
      sendApplied();
    },
    restart: (m) => {
      log.info({ reason: m.reason }, 'restart requested by the server');
      void shutdown('restart requested', 0, drainMs);
    },
    ...executor.handlers,
    ...pty.handlers,
    ...updater.handlers,
    ...files.handlers,
    ...termFiles.handlers,
  };

  conn = new ServerConnection({
    serverUrl: cfg.server,
    name: cfg.name,
    enrollToken: cfg.token,
    caFile: cfg.caFile,
    state,
    log,
    backoffInitialMs: cfg.backoffInitialMs,
    backoffMaxMs: cfg.backoffMaxMs,
    restartBackoffMaxMs: cfg.restartBackoffMaxMs,
    restartWindowMs: cfg.restartWindowMs,
    bulkWriteThreshold: cfg.bulkWriteThreshold,
    bulkWindow: cfg.bulkWindow,
    maxPayload: cfg.maxPayload,
    buildHello,
    handlers,
    onTermData: (id, data) => pty.onTermData(id, data),
    onFileData: (id, offset, data) => {
      if (!termFiles.onFileData(id, offset, data)) files.onFileData(id, offset, data);
    },
    onWelcome: (intervalMs) => {
      counters.connects_total++;
      welcomeIntervalMs = intervalMs;
      startHeartbeat();
      for (const c of capabilities) c.onWelcome?.();
    },
    onDisconnected: () => {
      counters.disconnects_total++;
      welcomeIntervalMs = null;
      clearInterval(heartbeatTimer);
      for (const c of capabilities) c.onDisconnected?.();
    },
  });

  /** (Re)starts heartbeats at the live interval (else the welcome's): one at once, then every interval. */
  function startHeartbeat(): void {
    clearInterval(heartbeatTimer);
    const intervalMs = live.heartbeatIntervalSec !== null ? live.heartbeatIntervalSec * 1000 : (welcomeIntervalMs ?? 5000);
    sinceAck = 0;
    const beat = () => {
      const ask = sinceAck % ACK_EVERY === 0;
      const seq = hb.seq;
      const metrics = collectMetrics(cpu, { executions: running.executions(), terminals: running.terminals() });
      const rttMs = hb.rttToReport;
      const msg: AgentMessage<'heartbeat'> = { type: 'heartbeat', metrics, ...(ask ? { seq } : {}), ...(rttMs !== null ? { rttMs } : {}) };
      if (conn.send(msg)) {
        sinceAck++;
        hb.lastSentAt = Date.now();
        hb.rttToReport = null;
        if (ask) {
          hb.seq++;
          hb.lastSentSeq = seq;
          hb.lastSentPerf = performance.now();
        }
        counters.heartbeats_sent_total++;
      }
    };
    beat();
    hb.intervalMs = intervalMs;
    heartbeatTimer = setInterval(beat, intervalMs);
  }

  /** SIGHUP and POST /reload: re-read the policy file, then the config file (labels, log level). */
  const reload = (): { ok: boolean; error?: string; labels?: number; policy?: string } => {
    // The policy is re-read even when the config is bad: tightening it must never wait on anything else.
    policy = readPolicy();
    for (const c of capabilities) c.onPolicy?.(policy);
    conn.send({ type: 'policy', policy: policy.view });
    try {
      localCfg = loadAgentConfig(argv, process.env);
      applyLive();
      log.info({ labels: Object.keys(localCfg.labels).length }, 'config reloaded');
      conn.send({ type: 'labels', labels: live.labels });
      return { ok: true, labels: Object.keys(localCfg.labels).length, policy: policy.view.source };
    } catch (err) {
      log.error({ err }, 'config reload failed; keeping the old one');
      applyLive();
      return { ok: false, error: (err as Error).message, policy: policy.view.source };
    } finally {
      // What is in force may have changed (a new policy cap): the server sees it.
      sendApplied();
    }
  };

  startHealth(
    cfg.healthPort,
    cfg.stateDir,
    cfg.unreachableAfterSec * 1000,
    {
      agentId: state.agentId,
      name: cfg.name,
      version: AGENT_VERSION,
      server: cfg.server,
      startedAt,
      connected: () => conn.connected,
      unreachableForMs: () => (conn.connected ? 0 : Date.now() - conn.lastConnectedAt),
      lastError: () => conn.lastError,
      connectedSince: () => (conn.connected ? conn.lastConnectedAt : null),
      heartbeat: () => ({
        intervalMs: hb.intervalMs,
        lastSentAt: hb.lastSentAt,
        lastSentSeq: hb.lastSentSeq,
        lastAckedAt: hb.lastAckedAt,
        lastAckedSeq: hb.lastAckedSeq,
      }),
      config: () => ({
        revision: pushedRevision,
        receivedAt: pushedAt !== null ? new Date(pushedAt).toISOString() : null,
        settings: pushed,
        effective: effective(),
        notes: live.notes,
      }),
      counters: () => counters,
      running: () => ({ executions: running.executions(), terminals: running.terminals() }),
      reload: () => {
        log.info({}, 'reload requested on the local endpoint');
        return reload();
      },
    },
    (err) => {
      // A taken port (another agent on this host, say) must not stop the agent: it runs on without
      // the local endpoint and says how to get one.
      const inUse = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
      log.warn(
        { err, port: cfg.healthPort },
        inUse
          ? `health port ${cfg.healthPort} is in use; running without the health endpoint (--health-port 0 picks a free port, -1 disables it)`
          : 'health endpoint unavailable',
      );
    },
    (port) => log.info({ port }, `health endpoint on http://127.0.0.1:${port}/health`),
  );

  let stopping = false;
  const drainMs = cfg.execStopDrainSec * 1000;
  const reportMs = cfg.execStopReportSec * 1000;
  /**
   * Orderly exit: running scripts get `drainMs` to finish, then are cancelled and their results
   * reported (or journaled) while the socket is still up; then bye, capabilities, exit.
   */
  async function shutdown(reason: string, code: number, drainMs = 0): Promise<void> {
    if (stopping) return;
    stopping = true;
    log.info({ reason }, 'agent stopping');
    await executor.drain(drainMs, reportMs).catch((err: unknown) => log.error({ err }, 'execution drain failed'));
    clearInterval(heartbeatTimer);
    await conn.stop(reason);
    for (const c of capabilities) await c.stop?.().catch((err: unknown) => log.error({ err }, 'capability stop failed'));
    log.info({ reason }, 'agent stopped');
    process.exit(code);
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM', 0, drainMs));
  process.on('SIGINT', () => void shutdown('SIGINT', 0, drainMs));
  process.on('SIGHUP', () => void reload());

  // Started by a server as its local agent (MUSTER_LOCAL_AGENT): that server holds our IPC
  // channel; when it goes away, however it died, so do we.
  if (process.channel) process.once('disconnect', () => void shutdown('parent server gone', 0));

  log.info({ version: AGENT_VERSION, server: cfg.server }, 'agent starting');
  conn.start();
}

main().catch((err: unknown) => {
  process.stderr.write(`muster-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
