import client from 'prom-client';

/** Live counts read when /metrics is scraped; capabilities install their own source at start. */
export interface MetricSources {
  tasksRunning(): number;
  terminalSessionsOpen(): number;
  /** File distribution: content bytes sent to agents, and read from disk for them (shared chunks make it less). */
  fileBytes(): { sent: number; read: number };
}

/**
 * Prometheus metrics of one server process. Label values are bounded (known types, states and
 * reasons only): never an agent, task or session id.
 */
export function createMetrics() {
  const registry = new client.Registry();
  const registers = [registry];
  client.collectDefaultMetrics({ register: registry, prefix: 'muster_process_' });
  // Not these: each scrape would list every libuv handle and resource (twice each), one object per
  // socket: at 18,000 sockets that was half of a scrape's CPU (32.7 → 16.2 ms). Open descriptors
  // (muster_process_open_fds) and the fleet's own gauges say the same at a fraction of the cost.
  for (const n of ['nodejs_active_handles', 'nodejs_active_handles_total', 'nodejs_active_resources', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(`muster_process_${n}`);
  }
  const sources: MetricSources = { tasksRunning: () => 0, terminalSessionsOpen: () => 0, fileBytes: () => ({ sent: 0, read: 0 }) };
  const agents = new client.Gauge({ name: 'muster_agents', help: 'Agents by status', labelNames: ['status'], registers });
  // Heartbeats and socket messages are counted thousands of times a second (4,000 heartbeats a
  // second at 20,000 agents): plain integers, added to the prom-client counters when those are read
  // (a scrape, or any get()), not a prom-client increment per message.
  let heartbeatsPending = 0;
  const messagesPending = { agent: new Map<string, number>(), console: new Map<string, number>() };
  const heartbeats = new client.Counter({
    name: 'muster_heartbeats_total',
    help: 'Heartbeats received',
    registers,
    collect() {
      if (heartbeatsPending === 0) return;
      this.inc(heartbeatsPending);
      heartbeatsPending = 0;
    },
  });
  const connects = new client.Counter({ name: 'muster_agent_connects_total', help: 'Agent connections accepted', registers });
  const disconnects = new client.Counter({ name: 'muster_agent_disconnects_total', help: 'Agent disconnections by reason', labelNames: ['reason'], registers });
  const upgradesRejected = new client.Counter({
    name: 'muster_upgrades_rejected_total',
    help: 'WebSocket upgrades refused',
    labelNames: ['channel', 'status'],
    registers,
  });
  const messages = new client.Counter({
    name: 'muster_socket_messages_total',
    help: 'Valid socket messages received',
    labelNames: ['channel', 'type'],
    registers,
    collect() {
      for (const channel of ['agent', 'console'] as const) {
        const pending = messagesPending[channel];
        for (const [type, n] of pending) this.inc({ channel, type }, n);
        pending.clear();
      }
    },
  });
  const messageErrors = new client.Counter({
    name: 'muster_socket_message_errors_total',
    help: 'Invalid socket messages',
    labelNames: ['channel', 'code'],
    registers,
  });
  const dbFlushes = new client.Counter({ name: 'muster_db_presence_flushes_total', help: 'Batched last_seen_at flush statements', registers });
  const dbFlushRows = new client.Counter({
    name: 'muster_db_presence_rows_total',
    help: 'Agent rows whose last_seen_at the presence flushes wrote (MUSTER_PRESENCE_PERSIST_MS)',
    registers,
  });
  const consoles = new client.Gauge({ name: 'muster_console_sockets', help: 'Open console sockets', registers });

  // The work: executions, tasks, output, terminals, rollouts.
  const executions = new client.Counter({
    name: 'muster_executions_total',
    help: 'Executions that reached a final state, by state',
    labelNames: ['state'],
    registers,
  });
  const executionDuration = new client.Histogram({
    name: 'muster_execution_duration_seconds',
    help: 'Run time of finished executions (started to finished), by final state',
    labelNames: ['state'],
    registers,
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600],
  });
  const dispatchLatency = new client.Histogram({
    name: 'muster_execution_dispatch_latency_seconds',
    help: 'From sending exec.run to the agent until it reported the execution running',
    registers,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  });
  const outputBytes = new client.Counter({
    name: 'muster_execution_output_bytes_total',
    help: 'Execution output bytes accepted for storage, by stream',
    labelNames: ['stream'],
    registers,
  });
  const tasksFinished = new client.Counter({ name: 'muster_tasks_finished_total', help: 'Tasks that ended, by final state', labelNames: ['state'], registers });
  const tasksTakenOver = new client.Counter({
    name: 'muster_tasks_taken_over_total',
    help: 'Cluster: running tasks of a dead node this node took over (direction "in"), or that another node took over from this one while it was cut off (direction "out")',
    labelNames: ['direction'],
    registers,
  });
  new client.Gauge({
    name: 'muster_tasks_running',
    help: 'Tasks not finished yet',
    registers,
    collect() {
      this.set(sources.tasksRunning());
    },
  });
  new client.Gauge({
    name: 'muster_terminal_sessions_open',
    help: 'Terminal sessions open (attached or detached) on this node',
    registers,
    collect() {
      this.set(sources.terminalSessionsOpen());
    },
  });
  new client.Counter({
    name: 'muster_file_bytes_total',
    help: 'File distribution content bytes: sent to agents, and read from disk (one read serves every agent sending that chunk)',
    labelNames: ['kind'],
    registers,
    collect() {
      const b = sources.fileBytes();
      this.reset();
      this.inc({ kind: 'sent' }, b.sent);
      this.inc({ kind: 'read' }, b.read);
    },
  });
  const terminalSessions = new client.Counter({ name: 'muster_terminal_sessions_total', help: 'Terminal sessions whose shell started', registers });
  const rolloutTargets = new client.Counter({
    name: 'muster_rollout_targets_total',
    help: 'Rollout targets that reached a result (succeeded, failed, rolled_back, skipped)',
    labelNames: ['result'],
    registers,
  });

  // The fleet's links.
  const heartbeatRtt = new client.Histogram({
    name: 'muster_agent_heartbeat_rtt_seconds',
    help: "Round trip of an agent's heartbeat to its ack, as the agent measured it (older agents: of a server ping to the agent's pong)",
    registers,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  });
  const connectionDuration = new client.Histogram({
    name: 'muster_agent_connection_duration_seconds',
    help: 'How long agent connections lasted, observed when they end',
    registers,
    buckets: [1, 10, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 7 * 24 * 3600],
  });
  // Where an agent's opening handshake waits on the server once accepted (the real agent waits up
  // to 60 s for the answer once connected; time in the kernel's accept queue before is not seen here).
  const agentUpgradeSeconds = new client.Histogram({
    name: 'muster_agent_upgrade_seconds',
    help: 'Agent upgrades: from the accepted connection to its request read (stage="request") and to the answer written, 101 or a refusal (stage="answered")',
    labelNames: ['stage'],
    registers,
    buckets: [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60],
  });
  const statusChanges = new client.Counter({
    name: 'muster_agent_status_changes_total',
    help: 'Agents going online or offline',
    labelNames: ['status'],
    registers,
  });
  const notifications = new client.Counter({
    name: 'muster_notification_attempts_total',
    help: 'Notification delivery attempts by channel and result (delivered, retry, failed)',
    labelNames: ['channel', 'result'],
    registers,
  });
  const notificationsDropped = new client.Counter({
    name: 'muster_notifications_dropped_total',
    help: 'Notifications dropped by the per-rule rate limit (MUSTER_NOTIFY_MAX_PER_MINUTE)',
    registers,
  });
  /** One valid socket message (`type` is one the channel's schema knows: a bounded set of labels). */
  const countMessage = (channel: 'agent' | 'console', type: string): void => {
    const pending = messagesPending[channel];
    pending.set(type, (pending.get(type) ?? 0) + 1);
  };
  const countHeartbeat = (): void => {
    heartbeatsPending++;
  };
  return {
    registry,
    sources,
    agents,
    heartbeats,
    connects,
    disconnects,
    upgradesRejected,
    messages,
    countMessage,
    countHeartbeat,
    messageErrors,
    dbFlushes,
    dbFlushRows,
    consoles,
    executions,
    executionDuration,
    dispatchLatency,
    outputBytes,
    tasksFinished,
    tasksTakenOver,
    terminalSessions,
    rolloutTargets,
    heartbeatRtt,
    connectionDuration,
    agentUpgradeSeconds,
    statusChanges,
    notifications,
    notificationsDropped,
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
