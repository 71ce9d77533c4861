// Simulated agents for the console benchmark: N WebSocket agents in one process that enroll,
// say hello and heartbeat at the interval the server's welcome names (with drifting metrics).
// They answer nothing else. Usage (a child of bench/console.mjs):
//   node bench/sim/console-agents.mjs WS_URL ENROLL_TOKEN COUNT
// Prints "ready <n>" once every agent was welcomed, then keeps heartbeating until killed.
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';

const [url, token, countArg] = process.argv.slice(2);
const N = Number(countArg ?? 10_000);
const ROLES = ['web', 'db', 'cache', 'queue', 'batch'];
const ENVS = ['prod', 'staging', 'dev'];
const VERSIONS = ['0.1.0', '0.1.0', '0.1.0', '0.0.9'];
let welcomed = 0;
let announced = false;

function agent(i) {
  const id = randomUUID();
  let secret = null;
  let timer = null;
  let cpu = Math.random() * 60;
  const mem = 8 * 2 ** 30;
  const connect = () => {
    const headers = { 'x-muster-agent-id': id };
    if (secret) headers.authorization = `Bearer ${secret}`;
    // Always the token too (the real agent sends it until a server accepted its secret): a socket
    // cut before its first heartbeat has its enrollment undone, and the token enrolls it again.
    headers['x-muster-enroll-token'] = token;
    const ws = new WebSocket(`${url}/ws/agent`, { headers, perMessageDeflate: false });
    ws.on('open', () =>
      ws.send(
        JSON.stringify({
          type: 'hello',
          protocol: 1,
          agentVersion: VERSIONS[i % VERSIONS.length],
          agentId: id,
          name: `sim-${String(i).padStart(5, '0')}`,
          hostname: `host-${i}.sim.example`,
          ips: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`],
          externalIp: null,
          platform: 'linux',
          arch: i % 10 === 0 ? 'arm64' : 'x64',
          os: 'Debian GNU/Linux 12 (bookworm)',
          cpus: 4,
          memoryBytes: mem,
          labels: { role: ROLES[i % ROLES.length], env: ENVS[i % ENVS.length], rack: `r${i % 40}` },
          capabilities: [],
          executions: [],
        }),
      ),
    );
    ws.on('message', (d, binary) => {
      if (binary) return;
      const m = JSON.parse(d.toString());
      if (m.type !== 'welcome') return;
      if (m.secret) secret = m.secret;
      if (++welcomed === N && !announced) {
        announced = true;
        process.stdout.write(`ready ${N}\n`);
      }
      const beat = () => {
        cpu = Math.max(0, Math.min(100, cpu + (Math.random() - 0.5) * 10));
        if (ws.readyState !== ws.OPEN) return;
        ws.send(
          JSON.stringify({
            type: 'heartbeat',
            metrics: {
              cpuPercent: Math.round(cpu * 10) / 10,
              memUsedBytes: Math.floor(mem * (0.3 + cpu / 300)),
              memTotalBytes: mem,
              load: [cpu / 25, cpu / 30, cpu / 35],
              diskUsedBytes: 40 * 2 ** 30,
              diskTotalBytes: 100 * 2 ** 30,
              uptimeSec: Math.floor(process.uptime()) + 1000,
              runningExecutions: 0,
              openTerminals: 0,
            },
          }),
        );
      };
      // Spread the fleet's heartbeats over the interval, as real agents started at random times are.
      setTimeout(() => {
        beat();
        timer = setInterval(beat, m.heartbeatIntervalMs);
      }, Math.random() * m.heartbeatIntervalMs);
    });
    ws.on('close', () => {
      if (timer) clearInterval(timer);
      timer = null;
      setTimeout(connect, 500 + Math.random() * 2000);
    });
    ws.on('error', () => {});
  };
  connect();
}

// Connect in slices so the server's connect-rate limiter and the event loop keep up.
let i = 0;
const slice = () => {
  for (let k = 0; k < 250 && i < N; k++) agent(i++);
  if (i < N) setTimeout(slice, 50);
};
slice();
