import type { Metrics } from '../../protocol/index.js';
import type { Fleet } from './fleet.js';

/**
 * Bench only, off unless MUSTER_BENCH_SIMULATED_PRESENCE is set: shows every agent known from the
 * database that has no socket as online, heartbeating every `heartbeatIntervalMs` (spread over the
 * interval, in slices every 100 ms) with drifting metrics, and flips `flipsPerSec` random agents
 * offline or online each second. Nothing is sent to any host and nothing but the ordinary presence
 * flush is written. It exists because one server process cannot hold the sockets of a 100,000-agent
 * fleet (the open-files limit); bench/console.mjs seeds the rows and sets the variable.
 * Returns the stop function.
 */
export function startSimulatedPresence(fleet: Fleet, o: { heartbeatIntervalMs: number; flipsPerSec: number }): () => void {
  const ids = [...fleet.agents.keys()].filter((id) => !fleet.isOnline(id));
  const cpu = new Float32Array(ids.length).map(() => Math.random() * 60);
  for (const id of ids) fleet.simulate(id, { online: true });
  const SLICE_MS = 100;
  const slices = Math.max(1, Math.round(o.heartbeatIntervalMs / SLICE_MS));
  let slice = 0;
  const beat = setInterval(() => {
    const from = Math.floor((ids.length * slice) / slices);
    const to = Math.floor((ids.length * (slice + 1)) / slices);
    slice = (slice + 1) % slices;
    for (let i = from; i < to; i++) {
      const id = ids[i]!;
      const c = (cpu[i] = Math.max(0, Math.min(100, cpu[i]! + (Math.random() - 0.5) * 10)));
      const mem = 8 * 2 ** 30;
      const metrics: Metrics = {
        cpuPercent: Math.round(c * 10) / 10,
        memUsedBytes: Math.floor(mem * (0.3 + c / 300)),
        memTotalBytes: mem,
        load: [c / 25, c / 30, c / 35],
        diskUsedBytes: 40 * 2 ** 30,
        diskTotalBytes: 100 * 2 ** 30,
        uptimeSec: 1000 + Math.floor(process.uptime()),
        runningExecutions: 0,
        openTerminals: 0,
      };
      if (fleet.get(id)?.status === 'online') fleet.simulate(id, { metrics });
    }
  }, SLICE_MS);
  const flips =
    o.flipsPerSec > 0 && ids.length > 0
      ? setInterval(() => {
          for (let k = 0; k < o.flipsPerSec; k++) {
            const id = ids[Math.floor(Math.random() * ids.length)]!;
            fleet.simulate(id, { online: fleet.get(id)?.status !== 'online' });
          }
        }, 1000)
      : undefined;
  beat.unref();
  flips?.unref();
  return () => {
    clearInterval(beat);
    clearInterval(flips);
  };
}
