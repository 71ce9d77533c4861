// EXEC_OUTPUT / TERM_DATA binary frames, byte-for-byte as protocol/frames.ts (plain JS so the
// simulator imports nothing from TypeScript):
//   TERM_DATA    0x01 | idLen u8 | id (utf8) | bytes
//   EXEC_OUTPUT  0x02 | stream u8 (1 stdout, 2 stderr) | seq u32 BE | idLen u8 | id (utf8) | bytes

/** Encodes an execution output frame. */
export function encodeExecOutput(executionId, stream, seq, data) {
  const id = Buffer.from(executionId, 'utf8');
  if (id.length > 255) throw new Error('execution id too long');
  const out = Buffer.allocUnsafe(7 + id.length + data.length);
  out[0] = 0x02;
  out[1] = stream === 'stdout' ? 1 : 2;
  out.writeUInt32BE(seq >>> 0, 2);
  out[6] = id.length;
  id.copy(out, 7);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 7 + id.length);
  return out;
}

/** Encodes a terminal data frame. */
export function encodeTermData(sessionId, data) {
  const id = Buffer.from(sessionId, 'utf8');
  if (id.length > 255) throw new Error('session id too long');
  const out = Buffer.allocUnsafe(2 + id.length + data.length);
  out[0] = 0x01;
  out[1] = id.length;
  id.copy(out, 2);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 2 + id.length);
  return out;
}

/** Decodes a frame header; the payload is a view (no copy). */
export function decodeFrame(buf) {
  if (buf.length < 2) throw new Error('frame too short');
  if (buf[0] === 0x01) {
    const n = buf[1];
    return { op: 'termData', sessionId: buf.subarray(2, 2 + n).toString('utf8'), data: buf.subarray(2 + n) };
  }
  if (buf[0] === 0x02) {
    const n = buf[6];
    return {
      op: 'execOutput',
      stream: buf[1] === 1 ? 'stdout' : 'stderr',
      seq: buf.readUInt32BE(2),
      executionId: buf.subarray(7, 7 + n).toString('utf8'),
      data: buf.subarray(7 + n),
    };
  }
  throw new Error(`unknown opcode ${buf[0]}`);
}
