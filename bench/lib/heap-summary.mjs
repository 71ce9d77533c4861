// Heap snapshot of a running server through its inspector (a process started with
// `--inspect=127.0.0.1:0`), summarized by constructor: count and self size per class, so two
// snapshots (idle, and with N agents) give the heap bytes each agent costs, class by class.
//   const snap = await heapByConstructor(serverOutput); … diffHeaps(before, after, N)
import WebSocket from 'ws';

/** Takes one heap snapshot of the process whose inspector URL is in `output`; returns Map name → { count, size }. */
export async function heapByConstructor(output) {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(output);
  if (!m) throw new Error('no inspector URL in the server output (started without --inspect?)');
  const ws = new WebSocket(m[1], { maxPayload: 1 << 30 });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const chunks = [];
  const done = new Promise((resolve, reject) => {
    ws.on('message', (d) => {
      const msg = JSON.parse(d.toString());
      if (msg.method === 'HeapProfiler.addHeapSnapshotChunk') chunks.push(msg.params.chunk);
      else if (msg.id === 2) {
        if (msg.error) reject(new Error(msg.error.message));
        else resolve();
      }
    });
  });
  ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.enable' }));
  ws.send(JSON.stringify({ id: 2, method: 'HeapProfiler.takeHeapSnapshot', params: { reportProgress: false } }));
  await done;
  ws.close();
  return summarize(JSON.parse(chunks.join('')));
}

function summarize(snap) {
  const meta = snap.snapshot.meta;
  const fields = meta.node_fields;
  const nf = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const types = meta.node_types[iType];
  const out = new Map();
  const nodes = snap.nodes;
  for (let i = 0; i < nodes.length; i += nf) {
    const type = types[nodes[i + iType]];
    let name = snap.strings[nodes[i + iName]];
    // Strings, numbers and code are grouped by type; objects by constructor.
    if (type !== 'object' && type !== 'closure' && type !== 'native') name = `(${type})`;
    else if (type === 'closure') name = `closure ${name || '(anonymous)'}`;
    else if (type === 'native') name = `native ${name.slice(0, 60)}`;
    const e = out.get(name) ?? { count: 0, size: 0 };
    e.count++;
    e.size += nodes[i + iSize];
    out.set(name, e);
  }
  return out;
}

/** Text table of what grew between two summaries, per agent (`n` agents added), largest first. */
export function diffHeaps(before, after, n, top = 30) {
  const rows = [];
  let total = 0;
  for (const [k, a] of after) {
    const b = before.get(k) ?? { count: 0, size: 0 };
    const ds = a.size - b.size;
    total += ds;
    rows.push([k, (a.count - b.count) / n, ds / n]);
  }
  rows.sort((x, y) => y[2] - x[2]);
  return [
    `heap growth per agent: ${(total / n).toFixed(0)} bytes (${n} agents)`,
    ...rows.slice(0, top).map(([k, c, s]) => `${s.toFixed(0).padStart(8)} B ${c.toFixed(2).padStart(7)} objects  ${k}`),
  ].join('\n');
}

/**
 * A full garbage collection in the process whose inspector URL is in `output`, then its
 * `process.memoryUsage()`: what is live, apart from when V8 would have collected the rest.
 */
export async function collectGarbage(output) {
  const m = /Debugger listening on (ws:\/\/\S+)/.exec(output);
  if (!m) throw new Error('no inspector URL in the output (started without --inspect?)');
  const ws = new WebSocket(m[1]);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const replies = new Map();
  ws.on('message', (d) => {
    const msg = JSON.parse(d.toString());
    replies.get(msg.id)?.(msg);
  });
  const call = (id, method, params = {}) =>
    new Promise((resolve, reject) => {
      replies.set(id, (msg) => (msg.error ? reject(new Error(msg.error.message)) : resolve(msg.result)));
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call(1, 'HeapProfiler.collectGarbage');
  // Twice: what the first freed may have held the last references to more.
  await call(2, 'HeapProfiler.collectGarbage');
  const r = await call(3, 'Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true });
  ws.close();
  return JSON.parse(r.result.value);
}
