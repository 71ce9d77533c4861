import client from 'prom-client';

/** Prometheus metrics of one server process. Label values are bounded (known types and reasons only). */
export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'muster_process_' });
  const agents = new client.Gauge({ name: 'muster_agents', help: 'Agents by status', labelNames: ['status'], registers: [registry] });
  const heartbeats = new client.Counter({ name: 'muster_heartbeats_total', help: 'Heartbeats received', registers: [registry] });
  const connects = new client.Counter({ name: 'muster_agent_connects_total', help: 'Agent connections accepted', registers: [registry] });
  const disconnects = new client.Counter({ name: 'muster_agent_disconnects_total', help: 'Agent disconnections by reason', labelNames: ['reason'], registers: [registry] });
  const upgradesRejected = new client.Counter({ name: 'muster_upgrades_rejected_total', help: 'WebSocket upgrades refused', labelNames: ['channel', 'status'], registers: [registry] });
  const messages = new client.Counter({ name: 'muster_socket_messages_total', help: 'Valid socket messages received', labelNames: ['channel', 'type'], registers: [registry] });
  const messageErrors = new client.Counter({ name: 'muster_socket_message_errors_total', help: 'Invalid socket messages', labelNames: ['channel', 'code'], registers: [registry] });
  const dbFlushes = new client.Counter({ name: 'muster_db_presence_flushes_total', help: 'Batched last_seen_at flush statements', registers: [registry] });
  const consoles = new client.Gauge({ name: 'muster_console_sockets', help: 'Open console sockets', registers: [registry] });
  return { registry, agents, heartbeats, connects, disconnects, upgradesRejected, messages, messageErrors, dbFlushes, consoles };
}
export type Metrics = ReturnType<typeof createMetrics>;
