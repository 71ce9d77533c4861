import type { ConsoleChannel } from '../../server/ws/handlers.js';

/** A console socket for unit tests that keeps the binary frames it was sent (an operator, never full). */
export function fakeConsole(id: number): ConsoleChannel & { frames: Uint8Array[] } {
  const frames: Uint8Array[] = [];
  return {
    id,
    frames,
    principal: { id: 1, username: 'op', role: 'operator', via: 'session', expiresAt: null, resolvedAt: 0 },
    send: () => true,
    sendBinary: (b) => {
      frames.push(b);
      return true;
    },
    bufferedAmount: () => 0,
    close: () => {},
    onClose: () => {},
  };
}
