import type { WebSocket } from 'ws';

/** The parts of ws's and Node's internals this reaches into (checked at run time: absent, that step is skipped). */
interface Internals {
  _socket?: {
    _handle?: { reading?: boolean; readStop?(): number; readStart?(): number } | null;
    _readableState?: { reading?: boolean };
    destroyed?: boolean;
  };
  _receiver?: { _buffers?: Buffer[] };
}

/**
 * Pauses a WebSocket so that it holds as little memory as it can while paused (output backpressure
 * pauses up to every agent socket of the node at once). Undone by resumeTight.
 *
 * `ws.pause()` alone only pauses the stream: Node reads once more from the kernel into the paused
 * stream's buffer (a read of up to 64 KiB) before it stops, and ws's parser keeps the part of a frame
 * cut by the last read as a view into that read's buffer, which keeps all of it alive. Up to 128 KiB
 * per paused socket: with 1,000 agents streaming output while the database is behind, 122 MB of the
 * server's memory (bench/exec.mjs ingest, sampled). Here the socket's handle stops reading at once
 * (what net.Socket#pause does for sockets read into a caller's buffer), and once the parser is done
 * with the read in hand, the cut frame is copied to its own size. Unread bytes wait in the kernel,
 * where TCP backpressure wants them.
 */
export function pauseTight(ws: WebSocket): void {
  ws.pause();
  const socket = (ws as unknown as Internals)._socket;
  const handle = socket?._handle;
  if (
    handle &&
    typeof handle.readStop === 'function' &&
    typeof handle.readStart === 'function' &&
    typeof handle.reading === 'boolean' &&
    socket._readableState &&
    !socket.destroyed
  ) {
    handle.reading = false;
    handle.readStop();
    // The stream must not start a read of its own meanwhile (it reads ahead up to its high-water
    // mark when it believes none is outstanding): one is, from its point of view, until resumeTight.
    socket._readableState.reading = true;
    stopped.add(ws);
  }
  // The parser is still inside the current read (this runs from one of its messages): the frame it
  // cuts is known once that read is parsed.
  process.nextTick(compactCutFrame, ws as unknown as Internals);
}

/** Sockets whose handle pauseTight stopped (resumeTight starts them again). */
const stopped = new WeakSet<WebSocket>();

/** Undoes pauseTight: the stream flows again and the handle reads. */
export function resumeTight(ws: WebSocket): void {
  ws.resume();
  if (!stopped.delete(ws)) return;
  const socket = (ws as unknown as Internals)._socket;
  const handle = socket?._handle;
  // The read the stream waits for: its data is pushed as any other (a stream ws keeps paused for its
  // own parser's backlog buffers it up to the high-water mark, then Node stops reading by itself).
  if (handle && !handle.reading && !socket.destroyed) {
    handle.reading = true;
    const err = handle.readStart!();
    if (err) (socket as unknown as { destroy(e: Error): void }).destroy(new Error(`readStart failed (${err})`));
  }
}

function compactCutFrame(w: Internals): void {
  const held = w._receiver?._buffers;
  if (!Array.isArray(held)) return;
  for (let i = 0; i < held.length; i++) {
    const b = held[i]!;
    // Only a view into a much larger read is copied (then the copy frees more than it takes).
    if (!Buffer.isBuffer(b) || b.buffer.byteLength <= 2 * b.byteLength) continue;
    // Not pooled: a pooled copy would keep an 8 KiB pool slab alive the same way.
    const copy = Buffer.allocUnsafeSlow(b.length);
    b.copy(copy);
    held[i] = copy;
  }
}
