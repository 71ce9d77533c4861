import { describe, expect, it } from 'vitest';
import {
  allocFileData,
  decodeFrame,
  encodeExecOutput,
  encodeFileData,
  encodeTermData,
  execOutputHeader,
  FrameError,
  FrameOp,
  reframe,
  termDataHeader,
} from '../../protocol/frames.js';
import {
  TERM_ACK_BYTES,
  TERM_AGENT_MAX_UNACKED,
  TERM_FRAME_MAX,
  TERM_HIGH_WATERMARK,
  TERM_HIGH_WATERMARK_MAX,
  TERM_LOW_WATERMARK,
  TERM_WATERMARK_GAP,
} from '../../protocol/flow-control.js';

const bytes = (...b: number[]) => new Uint8Array(b);

describe('frame codec', () => {
  it('round-trips terminal data, including empty and binary payloads', () => {
    for (const data of [bytes(), bytes(0, 255, 10, 13), new TextEncoder().encode('héllo ✓')]) {
      const f = decodeFrame(encodeTermData('sess-1', data));
      expect(f).toEqual({ op: 'termData', sessionId: 'sess-1', data });
    }
  });

  it('round-trips execution output with stream and a full u32 sequence', () => {
    for (const [stream, seq] of [
      ['stdout', 0],
      ['stderr', 1],
      ['stdout', 0xffff_ffff],
    ] as const) {
      const f = decodeFrame(encodeExecOutput('exec-ü', stream, seq, bytes(1, 2, 3)));
      expect(f).toEqual({ op: 'execOutput', executionId: 'exec-ü', stream, seq, data: bytes(1, 2, 3) });
    }
  });

  it('has the documented layout', () => {
    expect([...encodeTermData('ab', bytes(9))]).toEqual([FrameOp.termData, 2, 97, 98, 9]);
    expect([...encodeExecOutput('x', 'stderr', 258, bytes(7))]).toEqual([FrameOp.execOutput, 2, 0, 0, 1, 2, 1, 120, 7]);
  });

  it('decodes from a view into a larger buffer without copying', () => {
    const frame = encodeTermData('s', bytes(5, 6));
    const big = new Uint8Array(frame.length + 10);
    big.set(frame, 10);
    const f = decodeFrame(big.subarray(10));
    expect(f.op === 'termData' && [...f.data]).toEqual([5, 6]);
    expect(f.op === 'termData' && f.data.buffer).toBe(big.buffer);
  });

  it('rejects malformed frames with FrameError', () => {
    const bad: [Uint8Array, RegExp][] = [
      [bytes(), /too short/],
      [bytes(1), /too short/],
      [bytes(9, 0, 0), /unknown opcode 9/],
      [bytes(FrameOp.termData, 5, 97), /truncated/],
      [bytes(FrameOp.termData, 0, 1), /empty id|utf-8/],
      [bytes(FrameOp.termData, 2, 0xff, 0xfe), /utf-8/],
      [bytes(FrameOp.execOutput, 1, 0, 0), /truncated/],
      [bytes(FrameOp.execOutput, 3, 0, 0, 0, 0, 1, 97), /bad stream/],
      [bytes(FrameOp.execOutput, 1, 0, 0, 0, 0, 4, 97), /truncated/],
      [bytes(FrameOp.fileData, 0, 0, 0, 0, 0, 0, 0), /truncated/],
      [bytes(FrameOp.fileData, 0, 0, 0, 0, 0, 0, 0, 0, 3, 97), /truncated/],
    ];
    for (const [buf, msg] of bad) {
      expect(() => decodeFrame(buf), String([...buf])).toThrow(FrameError);
      expect(() => decodeFrame(buf)).toThrow(msg);
    }
  });

  it('refuses ids longer than 255 bytes when encoding', () => {
    expect(() => encodeTermData('x'.repeat(256), bytes())).toThrow(FrameError);
    expect(() => encodeExecOutput('é'.repeat(128), 'stdout', 0, bytes())).toThrow(FrameError);
    expect(() => encodeTermData('x'.repeat(255), bytes())).not.toThrow();
  });

  it('round-trips file data with offsets past 4 GiB; allocFileData leaves room to read straight into the frame', () => {
    for (const offset of [0, 65_536, 2 ** 32 + 7, Number.MAX_SAFE_INTEGER]) {
      const data = bytes(1, 2, 3);
      expect(decodeFrame(encodeFileData('tr-1', offset, data))).toEqual({ op: 'fileData', transferId: 'tr-1', offset, data });
    }
    const { frame, payloadAt } = allocFileData('tr-2', 9, 2);
    frame.set([7, 8], payloadAt);
    expect(decodeFrame(frame)).toEqual({ op: 'fileData', transferId: 'tr-2', offset: 9, data: bytes(7, 8) });
  });

  it('reframe forwards the received frame (a view, no copy) when the header is in front of the payload, else builds one', () => {
    for (const [header, frame] of [
      [termDataHeader('s-1'), encodeTermData('s-1', bytes(1, 2, 3))],
      [execOutputHeader('e-1', 'stderr', 9), encodeExecOutput('e-1', 'stderr', 9, bytes(1, 2, 3))],
    ] as const) {
      const f = decodeFrame(frame);
      const same = reframe(header, f.data);
      expect(same.buffer).toBe(frame.buffer);
      expect([...same]).toEqual([...frame]);
      // A prefix of the payload (output cut at a cap) still reuses the frame, one byte shorter.
      expect([...reframe(header, f.data.subarray(0, 2))]).toEqual([...frame.subarray(0, frame.length - 1)]);
      // Another id, seq or stream: a new frame with the right header.
      const other = reframe(header[0] === FrameOp.termData ? termDataHeader('s-2') : execOutputHeader('e-1', 'stderr', 10), f.data);
      expect(other.buffer).not.toBe(frame.buffer);
      expect(decodeFrame(other).data).toEqual(bytes(1, 2, 3));
    }
    // Bytes that are not in a frame at all (a replay slice, a fresh buffer).
    expect(decodeFrame(reframe(termDataHeader('s'), bytes(5)))).toEqual({ op: 'termData', sessionId: 's', data: bytes(5) });
    expect(decodeFrame(reframe(termDataHeader('s'), bytes(4, 5).subarray(1)))).toEqual({ op: 'termData', sessionId: 's', data: bytes(5) });
  });
});

describe('terminal flow-control constants', () => {
  it('keep the relations written in protocol/flow-control.ts', () => {
    expect(TERM_HIGH_WATERMARK - TERM_LOW_WATERMARK).toBeGreaterThanOrEqual(TERM_WATERMARK_GAP);
    expect(TERM_WATERMARK_GAP).toBe(2 * TERM_ACK_BYTES);
    expect(TERM_HIGH_WATERMARK).toBeLessThanOrEqual(TERM_HIGH_WATERMARK_MAX);
    expect(TERM_HIGH_WATERMARK_MAX + TERM_FRAME_MAX).toBeLessThan(TERM_AGENT_MAX_UNACKED);
    expect(TERM_HIGH_WATERMARK_MAX * 2).toBeLessThanOrEqual(TERM_AGENT_MAX_UNACKED);
  });
});
