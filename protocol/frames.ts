/**
 * Binary frame codec. Bulk bytes (terminal data, execution output) never travel as JSON or
 * base64: a frame is a one-byte opcode, a small header, then the raw payload.
 *
 *   TERM_DATA    0x01 | idLen u8 | id (utf8) | bytes
 *   EXEC_OUTPUT  0x02 | stream u8 (1 stdout, 2 stderr) | seq u32 BE | idLen u8 | id (utf8) | bytes
 *   FILE_DATA    0x03 | offset u64 BE (two u32) | idLen u8 | transferId (utf8) | bytes
 *
 * Ids are at most 255 bytes of UTF-8. This module uses only Uint8Array and DataView so it runs
 * unchanged in Node and in the browser.
 */
export const FrameOp = { termData: 0x01, execOutput: 0x02, fileData: 0x03 } as const;
export type Stream = 'stdout' | 'stderr';

export type Frame =
  | { op: 'termData'; sessionId: string; data: Uint8Array }
  | { op: 'execOutput'; executionId: string; stream: Stream; seq: number; data: Uint8Array }
  | { op: 'fileData'; transferId: string; offset: number; data: Uint8Array };

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** Error thrown for a frame that cannot be decoded. */
export class FrameError extends Error {}

/** The header of a TERM_DATA frame: what goes before the bytes. */
export function termDataHeader(sessionId: string): Uint8Array {
  const id = enc.encode(sessionId);
  if (id.length > 255) throw new FrameError('session id too long');
  const out = new Uint8Array(2 + id.length);
  out[0] = FrameOp.termData;
  out[1] = id.length;
  out.set(id, 2);
  return out;
}

/** The header of an EXEC_OUTPUT frame: what goes before the bytes. */
export function execOutputHeader(executionId: string, stream: Stream, seq: number): Uint8Array {
  const id = enc.encode(executionId);
  if (id.length > 255) throw new FrameError('execution id too long');
  const out = new Uint8Array(7 + id.length);
  out[0] = FrameOp.execOutput;
  out[1] = stream === 'stdout' ? 1 : 2;
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(2, seq >>> 0);
  out[6] = id.length;
  out.set(id, 7);
  return out;
}

/** `header` then `data` in one new frame. */
function join(header: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(header.length + data.length);
  out.set(header, 0);
  out.set(data, header.length);
  return out;
}

/**
 * Re-framing for relays: the frame `header` + `data`. A relay (the server between agents and
 * consoles) forwards bytes it received in a frame with the same layout; decodeFrame returns the
 * payload as a view into the received frame, so whenever the bytes in front of `data` in its
 * buffer are `header` already, the received frame is forwarded as it is (a view, no copy);
 * otherwise a new frame is built. Either way the result is exactly `header` followed by `data`.
 * Terminal output (agent → consoles), terminal input (console → agent) and execution output
 * (agent → consoles) all go through here.
 */
export function reframe(header: Uint8Array, data: Uint8Array): Uint8Array {
  const start = data.byteOffset - header.length;
  if (start >= 0) {
    const before = new Uint8Array(data.buffer, start, header.length);
    let same = true;
    for (let i = 0; i < header.length; i++) {
      if (before[i] !== header[i]) {
        same = false;
        break;
      }
    }
    if (same) return new Uint8Array(data.buffer, start, header.length + data.byteLength);
  }
  return join(header, data);
}

/** Encodes a terminal data frame (one allocation: it serves every keystroke and PTY read). */
export function encodeTermData(sessionId: string, data: Uint8Array): Uint8Array {
  const id = enc.encode(sessionId);
  if (id.length > 255) throw new FrameError('session id too long');
  const out = new Uint8Array(2 + id.length + data.length);
  out[0] = FrameOp.termData;
  out[1] = id.length;
  out.set(id, 2);
  out.set(data, 2 + id.length);
  return out;
}

/** Encodes an execution output frame. */
export function encodeExecOutput(executionId: string, stream: Stream, seq: number, data: Uint8Array): Uint8Array {
  return join(execOutputHeader(executionId, stream, seq), data);
}

/**
 * A FILE_DATA frame with room for `dataLength` payload bytes at `payloadAt`, so the sender can read
 * a file chunk straight into the frame (one buffer per chunk, no copy), in `into` when given.
 */
export function allocFileData(transferId: string, offset: number, dataLength: number, into?: Uint8Array): { frame: Uint8Array; payloadAt: number } {
  const id = enc.encode(transferId);
  if (id.length > 255) throw new FrameError('transfer id too long');
  const total = 10 + id.length + dataLength;
  // `into` (a reused buffer) when it is large enough: the frame is a view of its start.
  const frame = into && into.length >= total ? into.subarray(0, total) : new Uint8Array(total);
  frame[0] = FrameOp.fileData;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  dv.setUint32(1, Math.floor(offset / 2 ** 32));
  dv.setUint32(5, offset >>> 0);
  frame[9] = id.length;
  frame.set(id, 10);
  return { frame, payloadAt: 10 + id.length };
}

/**
 * The header of a FILE_DATA frame alone: sent as the first fragment of a WebSocket message whose
 * second fragment is the payload, so one chunk buffer serves every transfer without a copy per agent
 * (the receiver sees one message: header then bytes, as `encodeFileData` would make it).
 */
export function fileDataHeader(transferId: string, offset: number): Uint8Array {
  return allocFileData(transferId, offset, 0).frame;
}

/** Encodes a file data frame. */
export function encodeFileData(transferId: string, offset: number, data: Uint8Array): Uint8Array {
  const { frame, payloadAt } = allocFileData(transferId, offset, data.length);
  frame.set(data, payloadAt);
  return frame;
}

/** Decodes a binary frame; the payload is a view into `buf` (no copy). */
export function decodeFrame(buf: Uint8Array): Frame {
  if (buf.length < 2) throw new FrameError('frame too short');
  const op = buf[0];
  if (op === FrameOp.termData) {
    const idLen = buf[1]!;
    if (buf.length < 2 + idLen) throw new FrameError('truncated header');
    return { op: 'termData', sessionId: decodeId(buf.subarray(2, 2 + idLen)), data: buf.subarray(2 + idLen) };
  }
  if (op === FrameOp.execOutput) {
    if (buf.length < 7) throw new FrameError('truncated header');
    const s = buf[1];
    if (s !== 1 && s !== 2) throw new FrameError('bad stream');
    const seq = new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(2);
    const idLen = buf[6]!;
    if (buf.length < 7 + idLen) throw new FrameError('truncated header');
    return {
      op: 'execOutput',
      executionId: decodeId(buf.subarray(7, 7 + idLen)),
      stream: s === 1 ? 'stdout' : 'stderr',
      seq,
      data: buf.subarray(7 + idLen),
    };
  }
  if (op === FrameOp.fileData) {
    if (buf.length < 10) throw new FrameError('truncated header');
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const offset = dv.getUint32(1) * 2 ** 32 + dv.getUint32(5);
    const idLen = buf[9]!;
    if (buf.length < 10 + idLen) throw new FrameError('truncated header');
    return { op: 'fileData', transferId: decodeId(buf.subarray(10, 10 + idLen)), offset, data: buf.subarray(10 + idLen) };
  }
  throw new FrameError(`unknown opcode ${String(op)}`);
}

function decodeId(b: Uint8Array): string {
  try {
    const id = dec.decode(b);
    if (id.length === 0) throw new FrameError('empty id');
    return id;
  } catch {
    throw new FrameError('id is not utf-8');
  }
}
