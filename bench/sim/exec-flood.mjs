// Handler module for the simulated fleet: answers `exec.run` with `outputBytes` of stdout (default
// 10 MB) in 32 KiB EXEC_OUTPUT frames, as fast as the socket takes them (paused above 1 MiB
// buffered, like the real agent pauses its child), then exec.finished. Used by bench/exec.mjs.
import { encodeExecOutput } from './frames.mjs';

const CHUNK = 32 * 1024;
const HIGH_WATER = 1 << 20;

/** @param {{ options: Record<string, unknown>, emit(event: object): void }} ctx */
export default function setup(ctx) {
  const total = Number(ctx.options.outputBytes ?? 10_000_000);
  const payload = Buffer.alloc(CHUNK, 0x78);
  for (let i = 63; i < CHUNK; i += 64) payload[i] = 0x0a;
  return {
    'exec.run'(agent, m) {
      const startedAt = Date.now();
      agent.send({ type: 'exec.started', executionId: m.executionId, pid: 1000 + agent.index, startedAt, containment: 'pgid' });
      let sent = 0;
      let seq = 0;
      const pump = () => {
        for (;;) {
          if (sent >= total) {
            agent.send({
              type: 'exec.finished',
              executionId: m.executionId,
              status: 'succeeded',
              exitCode: 0,
              signal: null,
              startedAt,
              finishedAt: Date.now(),
              outputSeq: seq,
              truncated: false,
            });
            return;
          }
          if ((agent.ws?.bufferedAmount ?? 0) > HIGH_WATER) {
            setTimeout(pump, 2);
            return;
          }
          const n = Math.min(CHUNK, total - sent);
          if (!agent.sendBinary(encodeExecOutput(m.executionId, 'stdout', seq++, n === CHUNK ? payload : payload.subarray(0, n)))) return;
          sent += n;
        }
      };
      pump();
    },
    'exec.ack'(agent, m) {
      ctx.emit({ type: 'exec.acked', agentId: agent.id, executionId: m.executionId });
    },
    'exec.resume'() {},
    'exec.cancel'() {},
  };
}
