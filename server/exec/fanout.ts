import { execOutputHeader, reframe, type ExecutionView, type Stream } from '../../protocol/index.js';
import type { ConsoleChannel } from '../ws/handlers.js';

interface Sub {
  ch: ConsoleChannel;
  output: boolean;
  /** Per execution+stream: first skipped seq of a gap not yet announced. */
  gaps: Map<string, number>;
}

/**
 * Live output to consoles subscribed to a task. A console whose socket has more than
 * `maxBufferedBytes` queued is skipped for that chunk; when it has drained, it gets an
 * `exec.gap` naming the skipped range before the next chunk. So a slow browser never slows the
 * agent and never makes the server hold more than about `maxBufferedBytes` per console.
 */
export class ConsoleFanout {
  private readonly byTask = new Map<string, Map<number, Sub>>();

  constructor(private readonly maxBufferedBytes: number) {}

  subscribe(ch: ConsoleChannel, taskId: string, output: boolean): void {
    let subs = this.byTask.get(taskId);
    if (!subs) this.byTask.set(taskId, (subs = new Map()));
    const fresh = !subs.has(ch.id);
    subs.set(ch.id, { ch, output, gaps: new Map() });
    if (fresh) ch.onClose(() => this.unsubscribe(ch, taskId));
  }

  unsubscribe(ch: ConsoleChannel, taskId: string): void {
    const subs = this.byTask.get(taskId);
    if (!subs) return;
    subs.delete(ch.id);
    if (subs.size === 0) this.byTask.delete(taskId);
  }

  has(ch: ConsoleChannel, taskId: string): boolean {
    return this.byTask.get(taskId)?.has(ch.id) ?? false;
  }

  subscribers(taskId: string): number {
    return this.byTask.get(taskId)?.size ?? 0;
  }

  output(taskId: string, executionId: string, stream: Stream, seq: number, data: Uint8Array): void {
    const subs = this.byTask.get(taskId);
    if (!subs) return;
    let frame: Uint8Array | null = null;
    const key = `${executionId}:${stream}`;
    for (const s of subs.values()) {
      if (!s.output) continue;
      if (s.ch.bufferedAmount() > this.maxBufferedBytes) {
        if (!s.gaps.has(key)) s.gaps.set(key, seq);
        continue;
      }
      const gapFrom = s.gaps.get(key);
      if (gapFrom !== undefined) {
        s.gaps.delete(key);
        s.ch.send({ type: 'exec.gap', executionId, stream, fromSeq: gapFrom, toSeq: seq });
      }
      // The agent's frame itself when `data` is still in it (protocol/frames.ts reframe).
      frame ??= reframe(execOutputHeader(executionId, stream, seq), data);
      s.ch.sendBinary(frame, { bulk: true, key: executionId });
    }
  }

  /** The execution's output is complete: announce gaps a slow console still has open. */
  ended(taskId: string, executionId: string, nextSeq: number): void {
    const subs = this.byTask.get(taskId);
    if (!subs) return;
    for (const s of subs.values()) {
      for (const stream of ['stdout', 'stderr'] as const) {
        const key = `${executionId}:${stream}`;
        const from = s.gaps.get(key);
        if (from === undefined) continue;
        s.gaps.delete(key);
        s.ch.send({ type: 'exec.gap', executionId, stream, fromSeq: from, toSeq: nextSeq });
      }
    }
  }

  execution(taskId: string, execution: ExecutionView): void {
    const subs = this.byTask.get(taskId);
    if (!subs) return;
    const msg = { type: 'execution.updated', execution } as const;
    const json = JSON.stringify(msg);
    for (const s of subs.values()) s.ch.send(msg, false, json);
  }
}
