/**
 * The agent's output sequence runs across stdout and stderr in the order the pipes delivered the
 * bytes: data held for coalescing on one stream is sequenced before later data of the other.
 * Driven through Run's pipe handler with a long coalescing window, so the timing cannot hide it.
 */
import { describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config.js';
import { runLimits } from '../../agent/executor/index.js';
import { Run } from '../../agent/executor/run.js';
import { decodeFrame } from '../../protocol/index.js';

describe('exec output order across streams', () => {
  it('sequences stdout, stderr, stdout in the order they arrived, each flush keeping its stream', () => {
    const frames: Uint8Array[] = [];
    const link = { send: () => true, sendBinary: (b: Uint8Array) => (frames.push(b), true), bufferedAmount: () => 0, connected: () => true };
    const log = { info() {}, warn() {}, error() {}, debug() {} };
    const run = new Run(
      { type: 'exec.run', executionId: 'e-1', taskId: 't-1' } as never,
      'agent-1',
      link,
      log as never,
      { ...runLimits(loadAgentConfig(['--server', 'ws://x'], {})), coalesceMs: 60_000 },
      () => {},
    );
    const onData = (s: 'stdout' | 'stderr', text: string) => (run as unknown as { onData(s: string, d: Buffer): void }).onData(s, Buffer.from(text));
    onData('stdout', 'out 1\n');
    onData('stdout', 'out 2\n');
    onData('stderr', 'err 1\n');
    onData('stdout', 'out 3\n');
    onData('stderr', 'err 2\n');
    // The last piece is still held for coalescing; the long window would hold it: flush by hand.
    (run as unknown as { flush(s: string): void }).flush('stderr');
    const got = frames.map((f) => decodeFrame(f)).map((f) => (f.op === 'execOutput' ? [f.seq, f.stream, new TextDecoder().decode(f.data)] : null));
    expect(got).toEqual([
      [0, 'stdout', 'out 1\nout 2\n'],
      [1, 'stderr', 'err 1\n'],
      [2, 'stdout', 'out 3\n'],
      [3, 'stderr', 'err 2\n'],
    ]);
  });
});
