import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { Server } from 'node:net';
import type { Logger } from '../log.js';

/**
 * Sizes the listening socket's accept queue to what this process will take from it in time.
 *
 * Node 20's libuv accepts one connection per event loop iteration (libuv#3696). A busy loop (a
 * cluster node holding 15,000 agents on a starved machine: 50–100 iterations a second) takes that
 * many connections a second, so a queue of 65,535 holds connections for minutes: each is accepted
 * after its agent's handshake timeout (15 s) has passed, dead on arrival, and spends an accept a
 * live one needed: congestion collapse (bench/RESULTS.md, Cluster, session 16). A connection the
 * kernel does not queue loses its SYN instead, and the client retransmits it (1, 3, 7 s…), which
 * costs this process nothing.
 *
 * So every second the queue is set to what the loop would accept within `waitMs`: the connections
 * accepted last second that sent a request, when nearly every iteration accepted one (the queue
 * never ran dry), else
 * iterations a second over the loop's utilization (the iterations it could run if it were busy all
 * the time: an idle loop turns as fast as connections come), times `waitMs`, between `min` and `max`
 * (MUSTER_LISTEN_BACKLOG, which the queue starts at, for a fleet reconnecting after a restart).
 * It grows at once and shrinks on the largest estimate of the last few seconds (a GC pause must not
 * close the door). A new listen() on a listening socket changes only its queue length (Linux);
 * connections already queued stay.
 */
export interface AcceptQueueOptions {
  /** The longest queue (MUSTER_LISTEN_BACKLOG); also the start. */
  max: number;
  /** The shortest (MUSTER_LISTEN_BACKLOG_MIN). */
  min: number;
  /** How long a connection may wait to be accepted (MUSTER_ACCEPT_QUEUE_WAIT_MS). */
  waitMs: number;
}

/**
 * One reading: loop iterations, connections accepted and connections that then sent a request (an
 * upgrade or an HTTP request) so far, and the loop's utilization since the previous reading.
 */
export interface LoopSample {
  loops: number;
  accepted: number;
  spoke: number;
  utilization: number;
}

/** Seconds of estimates the queue shrinks on (the largest of them). */
const SHRINK_WINDOW = 5;

/**
 * The controller, without timers or sockets: `next` takes a sample a second apart and answers the
 * queue length to set, or null to keep it; `applied` records that it was set.
 */
export class AcceptQueueSizer {
  private current: number;
  private last: LoopSample | null = null;
  private readonly recent: number[] = [];

  constructor(private readonly o: AcceptQueueOptions) {
    this.current = o.max;
  }

  get length(): number {
    return this.current;
  }

  next(s: LoopSample, seconds: number): number | null {
    const prev = this.last;
    this.last = s;
    if (prev === null || seconds <= 0) return null;
    const loops = s.loops - prev.loops;
    const accepted = s.accepted - prev.accepted;
    // An accept in (nearly) every iteration: the queue never ran dry, and the loop drains it at the
    // rate of the connections that spoke (on a machine short of CPU the utilization reads low: time
    // the process waits for a CPU after its poll returned counts as idle). A connection accepted
    // after its client gave up is over in a fast iteration: counting it would grow the queue that
    // made it stale (a 15 s agent timeout in a 45,000-agent enrollment: queues of 5,000–14,000 at
    // 350 accepts a second, most of them dead). Otherwise, iterations per second of busy loop; a
    // loop that did no work could take any number.
    const saturated = loops > 0 && accepted >= 0.9 * loops;
    const capacity = saturated ? Math.min(accepted, s.spoke - prev.spoke) / seconds : s.utilization > 0 ? loops / seconds / s.utilization : Infinity;
    const wanted = Math.max(this.o.min, Math.min(this.o.max, Math.round((capacity * this.o.waitMs) / 1000)));
    this.recent.push(wanted);
    if (this.recent.length > SHRINK_WINDOW) this.recent.shift();
    const target = Math.max(...this.recent);
    // Small moves are noise: a listen() only for a change of a quarter or more, or to a bound.
    const bound = target === this.o.max || target === this.o.min;
    if (target === this.current || (!bound && Math.abs(target - this.current) < this.current / 4)) return null;
    return target;
  }

  applied(length: number): void {
    this.current = length;
  }
}

/** What listen() on the server's handle looks like (TCPWrap.listen in Node 20, returning a libuv error code). */
type ListeningHandle = { listen(backlog: number): number };

/**
 * Starts sizing `server`'s accept queue (see AcceptQueueSizer); `onChange` hears each new length.
 * Returns the stop, or null where it cannot work (no handle with listen, no loop metrics): the queue
 * then stays at MUSTER_LISTEN_BACKLOG.
 */
export function sizeAcceptQueue(server: Server, o: AcceptQueueOptions, log: Logger, onChange: (length: number) => void): (() => void) | null {
  const handle = (server as unknown as { _handle?: Partial<ListeningHandle> | null })._handle;
  const uv = (): number | undefined => (performance.nodeTiming as { uvMetricsInfo?: { loopCount: number } }).uvMetricsInfo?.loopCount;
  if (!handle || typeof handle.listen !== 'function' || uv() === undefined) {
    log.warn('the accept queue cannot be sized on this Node.js (no listen handle or loop metrics): it stays at MUSTER_LISTEN_BACKLOG');
    return null;
  }
  const listen = handle.listen.bind(handle);
  let accepted = 0;
  let spoke = 0;
  const count = (): void => void accepted++;
  const heard = (): void => void spoke++;
  server.on('connection', count);
  server.on('upgrade', heard);
  server.on('request', heard);
  const sizer = new AcceptQueueSizer(o);
  onChange(sizer.length);
  let elu: EventLoopUtilization = performance.eventLoopUtilization();
  let t = performance.now();
  sizer.next({ loops: uv()!, accepted, spoke, utilization: 0 }, 0);
  const timer = setInterval(() => {
    const now = performance.now();
    const e = performance.eventLoopUtilization();
    const length = sizer.next({ loops: uv()!, accepted, spoke, utilization: performance.eventLoopUtilization(e, elu).utilization }, (now - t) / 1000);
    elu = e;
    t = now;
    if (length === null) return;
    const err = listen(length);
    if (err !== 0) {
      log.warn({ err, length }, 'could not resize the accept queue; it stays as it was');
      return;
    }
    sizer.applied(length);
    log.debug({ length }, 'accept queue resized');
    onChange(length);
  }, 1000);
  timer.unref();
  return () => {
    clearInterval(timer);
    server.off('connection', count);
    server.off('upgrade', heard);
    server.off('request', heard);
  };
}
