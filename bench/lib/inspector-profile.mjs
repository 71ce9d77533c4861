// CPU profile of a running server over a chosen stretch (the measured runs, not the fleet's
// connect), through the inspector of a process started with `--inspect=127.0.0.1:0`.
import fs from 'node:fs';
import WebSocket from 'ws';

/** Connects to the inspector a process announced in `output` ("Debugger listening on ws://…"). */
export async function inspectorProfiler(output) {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(output);
  if (!m) throw new Error('no inspector URL in the server output (started without --inspect?)');
  const ws = new WebSocket(m[1]);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let id = 0;
  const waiting = new Map();
  ws.on('message', (d) => {
    const msg = JSON.parse(d.toString());
    const w = waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id);
    if (msg.error) w.reject(new Error(msg.error.message));
    else w.resolve(msg.result);
  });
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      waiting.set(++id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call('Profiler.enable');
  return {
    /** Starts sampling (every `intervalUs` µs). */
    async start(intervalUs = 500) {
      await call('Profiler.setSamplingInterval', { interval: intervalUs });
      await call('Profiler.start');
    },
    /** Stops sampling and writes the profile (open it in Chrome DevTools or summarize it). */
    async stop(file) {
      const { profile } = await call('Profiler.stop');
      fs.writeFileSync(file, JSON.stringify(profile));
      return file;
    },
    close: () => ws.close(),
  };
}
