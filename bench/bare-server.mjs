// The transport's own cost: a bare `ws` server that accepts the simulator's agents (same upgrade
// path and headers, no authentication), answers hello with welcome and parses every heartbeat as
// JSON, and nothing else. Presence figures are reported as ratios to this.
//   node bench/bare-server.mjs [port]     prints "bare ws listening on PORT"
import http from 'node:http';
import { WebSocketServer } from 'ws';

const heartbeatIntervalMs = Number(process.env.BARE_HEARTBEAT_INTERVAL_MS ?? 5000);
const server = http.createServer((_req, res) => {
  res.writeHead(404).end();
});
const wss = new WebSocketServer({ noServer: true, maxPayload: 4 << 20, perMessageDeflate: false });
let heartbeats = 0;
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.type === 'hello') ws.send(JSON.stringify({ type: 'welcome', protocol: 1, agentId: m.agentId, heartbeatIntervalMs, serverTime: Date.now() }));
      else if (m.type === 'heartbeat') heartbeats++;
    });
    ws.on('error', () => {});
  });
});
server.listen(Number(process.argv[2] ?? 0), '0.0.0.0', () => {
  process.stdout.write(`bare ws listening on ${server.address().port}\n`);
});
setInterval(() => process.stdout.write(`heartbeats ${heartbeats}\n`), 10_000).unref();
process.on('SIGTERM', () => process.exit(0));
