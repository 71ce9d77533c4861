/**
 * Terminal flow control: one set of constants for the browser, the server and the agent.
 *
 * The loop, end to end: the agent counts output bytes it sent and nobody acknowledged yet
 * (`unacked`). It pauses the PTY when `unacked` rises above the high watermark and resumes it when
 * `unacked` falls to the low watermark. The browser acknowledges bytes once xterm.js has written
 * them (`term.ack`), batched up to TERM_ACK_BYTES or TERM_CONSOLE_ACK_DELAY_MS; the server
 * forwards to the agent what every control console consumed, batched the same way (at least
 * TERM_ACK_BYTES, or TERM_SERVER_ACK_IDLE_MS after the consoles caught up completely).
 *
 * Relations between the values (the defaults keep them; a unit test checks that):
 *  - high − low ≥ TERM_WATERMARK_GAP (2 × TERM_ACK_BYTES) is advised: between pause and resume
 *    there is room for at least two batched acks, so a paused PTY resumes on acks already on
 *    their way rather than on the idle timers, and a flowing PTY is not paused once per ack.
 *    Smaller gaps still work (slower), so the agent only requires low < high.
 *  - high ≤ TERM_HIGH_WATERMARK_MAX = TERM_AGENT_MAX_UNACKED / 2 (the agent's configuration
 *    refuses more): an agent overshoots its high watermark by at most one TERM_FRAME_MAX frame (the
 *    batch read before it paused), and the server ends a session whose agent is
 *    TERM_AGENT_MAX_UNACKED bytes ahead as one that ignores flow control; the other half is the
 *    margin for the overshoot and for acks still in flight.
 *  - Deadlock freedom does not depend on the sizes: every byte sent is acknowledged eventually
 *    (by the consoles, by the server while none is attached, or never because the session ends),
 *    and the idle timers flush any batch smaller than TERM_ACK_BYTES.
 */

/** Acks are batched up to this many bytes (browser → server, server → agent). */
export const TERM_ACK_BYTES = 16 * 1024;
/** The browser sends a smaller batch of acks this long after its first byte. */
export const TERM_CONSOLE_ACK_DELAY_MS = 15;
/**
 * The server forwards a smaller batch this long after the consoles caught up completely. Typing:
 * each echo is acknowledged by the console; forwarding each of those acks at once cost the server
 * a socket write and the agent a message per keystroke; with the delay a burst of keys costs one.
 */
export const TERM_SERVER_ACK_IDLE_MS = 25;
/** Default agent high watermark (unacknowledged bytes above which the PTY pauses). */
export const TERM_HIGH_WATERMARK = 1024 * 1024;
/** Default agent low watermark (unacknowledged bytes at which a paused PTY resumes). */
export const TERM_LOW_WATERMARK = 256 * 1024;
/** Largest terminal data frame the agent batches and the server replays scrollback in. */
export const TERM_FRAME_MAX = 64 * 1024;
/** An agent this many bytes ahead of the consoles ignores flow control: the server ends the session. */
export const TERM_AGENT_MAX_UNACKED = 16 * 1024 * 1024;
/** Largest high watermark an agent accepts (see the relations above). */
export const TERM_HIGH_WATERMARK_MAX = TERM_AGENT_MAX_UNACKED / 2;
/** Advised smallest gap between the agent's high and low watermarks (see the relations above). */
export const TERM_WATERMARK_GAP = 2 * TERM_ACK_BYTES;
