import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { decodeFrame, encodeTermData } from '../../protocol/index.js';
import { asciicastLines, RECORDING_MAGIC, TerminalRecorder } from '../../server/terminals/recorder.js';
import { ScrollbackRing } from '../../server/terminals/ring.js';
import { TerminalSession } from '../../server/terminals/session.js';
import { fakeConsole } from '../helpers/fake-console.js';

const enc = new TextEncoder();

describe('ScrollbackRing', () => {
  it('keeps the last capacity bytes across wraps', () => {
    const r = new ScrollbackRing(10);
    r.push(enc.encode('abcdef'));
    expect(r.snapshot().toString()).toBe('abcdef');
    r.push(enc.encode('ghijkl'));
    expect(r.snapshot().toString()).toBe('cdefghijkl');
    r.push(enc.encode('0123456789ABC'));
    expect(r.snapshot().toString()).toBe('3456789ABC');
    r.push(enc.encode('x'));
    expect(r.snapshot().toString()).toBe('456789ABCx');
  });

  it('never starts a replay inside a UTF-8 character', () => {
    const r = new ScrollbackRing(8);
    r.push(enc.encode('a你好b')); // 1 + 3 + 3 + 1 = 8 bytes
    r.push(enc.encode('c')); // drops 'a'
    r.push(enc.encode('d')); // drops the first byte of 你
    expect(r.snapshot().toString()).toBe('好bcd');
  });
});

/** A recording as the download serves it: asciicast v2 text. */
async function castOf(file: string): Promise<string> {
  let out = '';
  for await (const l of asciicastLines(file)) out += l;
  return out;
}

describe('TerminalRecorder', () => {
  it('writes a v2 header, output with a multi-byte character split across chunks, and resizes', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rec-'));
    const file = path.join(dir, 'x.rec');
    const rec = new TerminalRecorder(file, { cols: 80, rows: 24, maxBytes: 1 << 20, maxQueuedBytes: 8 << 20 });
    const bytes = enc.encode('héllo 🎉\r\n');
    rec.output(bytes.subarray(0, 2)); // 'h' + first byte of é
    rec.output(bytes.subarray(2, 9)); // cuts the emoji
    rec.resize(100, 30);
    rec.output(bytes.subarray(9));
    const res = await rec.close();
    const lines = (await castOf(file))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ version: 2, width: 80, height: 24 });
    const events = lines.slice(1);
    expect(
      events
        .filter((e) => e[1] === 'o')
        .map((e) => e[2])
        .join(''),
    ).toBe('héllo 🎉\r\n');
    expect(events.find((e) => e[1] === 'r')?.[2]).toBe('100x30');
    expect(res.truncated).toBe(false);
    expect(res.bytes).toBe(fs.statSync(file).size);
  });

  it('records any output exactly: escapes, control characters, mixed ASCII and UTF-8, chunks of every size across events', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rec-'));
    const file = path.join(dir, 'x.rec');
    const rec = new TerminalRecorder(file, { cols: 80, rows: 24, maxBytes: 64 << 20, maxQueuedBytes: 64 << 20 });
    const pieces = [
      'plain ascii line\r\n',
      '"quoted" and back\\slash\t\u001b[1;31mred\u001b[0m\u0000\u007f',
      'ünïcödé 你好 🎉 mixed with ascii',
      '\u0001'.repeat(70_000), // every byte escapes to six: larger than any event
      'x'.repeat(200_000), // several events' worth
      'tail é',
    ];
    const want = pieces.join('');
    const bytes = enc.encode(want);
    // Cut into chunks of varying sizes (splitting multi-byte characters too).
    let sent = 0;
    for (let i = 0; sent < bytes.length; i++) {
      const n = [1, 7, 4096, 65_536, 3, 30_000][i % 6]!;
      rec.output(bytes.subarray(sent, sent + n));
      sent += n;
    }
    const res = await rec.close();
    const events = (await castOf(file))
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => JSON.parse(l));
    expect(events.every((e) => e[1] === 'o' && typeof e[0] === 'number')).toBe(true);
    expect(events.map((e) => e[2]).join('')).toBe(want);
    expect(events.length).toBeGreaterThan(3);
    expect(res).toEqual({ bytes: fs.statSync(file).size, truncated: false });
  });

  it('writes every event line exactly as JSON.stringify would (every ASCII byte, around UTF-8, in and across chunks and events)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rec-'));
    const file = path.join(dir, 'x.rec');
    const rec = new TerminalRecorder(file, { cols: 80, rows: 24, maxBytes: 64 << 20, maxQueuedBytes: 64 << 20 });
    const all = Array.from({ length: 0x80 }, (_, b) => String.fromCharCode(b)).join('');
    const pieces = ['é', all, 'é', all, '\u001b[0m\r\n', 'ü'.repeat(3000), all.repeat(900), 'end\r\n'];
    const want = pieces.join('');
    const bytes = enc.encode(want);
    rec.output(bytes.subarray(0, 1)); // an event's first chunk that decodes to nothing yet starts no event
    await new Promise((r) => setTimeout(r, 150)); // (the merge timer, 100 ms, would write it empty)
    let sent = 1;
    for (let i = 0; sent < bytes.length; i++) {
      const n = [5, 129, 1, 65_536, 2, 4096][i % 6]!;
      rec.output(bytes.subarray(sent, sent + n));
      sent += n;
    }
    // Then events one at a time, each written before the next (their buffers are reused).
    const later: string[] = [];
    for (let i = 0; i < 12; i++) {
      const text = `${String.fromCharCode(0x41 + i).repeat(40_000 + i * 997)}\r\n"${i}"`;
      later.push(text);
      rec.output(enc.encode(text));
      await new Promise((r) => setTimeout(r, 30));
    }
    await rec.close();
    const lines = (await castOf(file)).trim().split('\n').slice(1);
    expect(lines.length).toBeGreaterThan(13);
    // Byte for byte what JSON.stringify writes for the same event (short escapes, lowercase \u00xx, UTF-8 as is).
    for (const l of lines) expect(l).toBe(JSON.stringify(JSON.parse(l)));
    expect(lines.filter((l) => (JSON.parse(l) as [number, string, string])[2] === '')).toEqual([]);
    expect(lines.map((l) => (JSON.parse(l) as [number, string, string])[2]).join('')).toBe(want + later.join(''));
    expect(lines.slice(-12).map((l) => (JSON.parse(l) as [number, string, string])[2])).toEqual(later);
  });

  it('stores the output bytes as they came, once each, and serves them as asciicast events joined within 20 ms', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rec-'));
    const file = path.join(dir, 'x.rec');
    const rec = new TerminalRecorder(file, { cols: 80, rows: 24, maxBytes: 1 << 20, maxQueuedBytes: 8 << 20, title: 'op@web-1' });
    const a = '\u001b[1mbold\u001b[0m "q" \\ \r\n';
    rec.output(enc.encode(a));
    rec.output(enc.encode('same event'));
    await new Promise((r) => setTimeout(r, 60)); // past the 20 ms merge window: a new event
    rec.output(enc.encode('next'));
    const res = await rec.close();
    const raw = fs.readFileSync(file);
    // The bytes themselves, not escaped: one copy of each in the file.
    expect(raw.subarray(0, RECORDING_MAGIC.length).toString()).toBe(RECORDING_MAGIC);
    expect(raw.indexOf(Buffer.from(a + 'same event'))).toBeGreaterThan(0);
    expect(raw.indexOf(Buffer.from(a), raw.indexOf(Buffer.from(a)) + 1)).toBe(-1);
    expect(res.bytes).toBe(raw.length);
    const lines = (await castOf(file))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as unknown);
    expect(lines[0]).toMatchObject({ version: 2, width: 80, height: 24, title: 'op@web-1' });
    const events = lines.slice(1) as [number, string, string][];
    expect(events.map((e) => e[2])).toEqual([a + 'same event', 'next']);
    expect(events[1]![0] - events[0]![0]).toBeGreaterThanOrEqual(0.04);
  });

  it('a recording cut short (the server stopped mid-write) serves its whole events', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rec-'));
    const file = path.join(dir, 'x.rec');
    const rec = new TerminalRecorder(file, { cols: 80, rows: 24, maxBytes: 1 << 20, maxQueuedBytes: 8 << 20 });
    rec.output(enc.encode('first\r\n'));
    rec.resize(90, 30);
    rec.output(enc.encode('second, cut'));
    await rec.close();
    const whole = fs.readFileSync(file);
    for (const cut of [1, 5, 13, 14]) {
      fs.writeFileSync(file, whole.subarray(0, whole.length - cut));
      const events = (await castOf(file))
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => JSON.parse(l) as [number, string, string]);
      expect(events.map((e) => e[2])).toEqual(['first\r\n', '90x30']);
    }
    fs.writeFileSync(file, 'not a recording\n');
    await expect(castOf(file)).rejects.toThrow(/not a Muster terminal recording/);
  });

  it('stops at its size cap and says so', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rec-'));
    const file = path.join(dir, 'x.rec');
    const rec = new TerminalRecorder(file, { cols: 80, rows: 24, maxBytes: 2048, maxQueuedBytes: 8 << 20 });
    for (let i = 0; i < 100; i++) {
      rec.output(enc.encode('x'.repeat(100)));
      rec.resize(80 + (i % 2), 24); // forces an event per chunk
    }
    const res = await rec.close();
    expect(res.truncated).toBe(true);
    expect(fs.statSync(file).size).toBeLessThanOrEqual(2048);
  });
});

describe('TerminalSession flow control', () => {
  const make = () => {
    const acks: number[] = [];
    const ch = fakeConsole(1);
    const s = new TerminalSession({
      id: 's1',
      agentId: 'a1',
      owner: { id: 1, username: 'op' },
      cols: 80,
      rows: 24,
      scrollbackBytes: 1024,
      watchMaxLagBytes: 4 << 20,
      recorder: null,
      opener: { ch, ref: 'r' },
      ackAgent: (b) => acks.push(b),
    });
    s.confirmOpen(42);
    return { s, ch, acks };
  };

  it('acknowledges the agent only for bytes the control console consumed', () => {
    const { s, ch, acks } = make();
    s.attach(ch, 'control');
    const chunk = new Uint8Array(20_000);
    s.output(chunk);
    s.output(chunk);
    expect(acks).toEqual([]); // nothing consumed yet
    s.ack(ch.id, 20_000);
    expect(acks).toEqual([20_000]); // ≥ the forwarding threshold
    s.ack(ch.id, 100);
    expect(acks).toEqual([20_000]); // held: small and the console is behind
    s.ack(ch.id, 19_900);
    expect(acks).toEqual([20_000, 20_000]); // caught up: everything goes
    expect(s.ackedToAgent).toBe(s.received);
  });

  it('counts replayed scrollback in the console acks but not against the agent', () => {
    vi.useFakeTimers();
    const { s, ch, acks } = make();
    s.output(enc.encode('before')); // detached: acknowledged (after the ack delay)
    vi.advanceTimersByTime(25);
    expect(acks).toEqual([6]);
    s.attach(ch, 'control');
    expect(ch.frames.length).toBe(1); // the replay
    const f = decodeFrame(ch.frames[0]!);
    expect(f.op === 'termData' && Buffer.from(f.data).toString()).toBe('before');
    s.output(enc.encode('live!'));
    s.ack(ch.id, 6); // the replay only
    expect(acks).toEqual([6]);
    s.ack(ch.id, 5);
    vi.advanceTimersByTime(25);
    expect(acks).toEqual([6, 5]);
    vi.useRealTimers();
  });

  it('a watcher never holds the operator back; a detached session acknowledges everything', () => {
    vi.useFakeTimers();
    const { s, ch, acks } = make();
    const w = fakeConsole(2);
    s.attach(ch, 'control');
    s.attach(w, 'watch');
    s.output(new Uint8Array(100));
    s.ack(ch.id, 100);
    vi.advanceTimersByTime(25);
    expect(acks).toEqual([100]);
    s.output(new Uint8Array(50));
    s.detach(ch.id);
    vi.advanceTimersByTime(25);
    expect(acks).toEqual([100, 50]);
    vi.useRealTimers();
  });

  it('forwards the acks of a burst of echoes as one, and a large ack at once', () => {
    vi.useFakeTimers();
    const { s, ch, acks } = make();
    s.attach(ch, 'control');
    for (let i = 0; i < 10; i++) {
      s.output(enc.encode('k'));
      s.ack(ch.id, 1);
    }
    expect(acks).toEqual([]);
    vi.advanceTimersByTime(25);
    expect(acks).toEqual([10]);
    s.output(new Uint8Array(20_000));
    s.ack(ch.id, 20_000);
    expect(acks).toEqual([10, 20_000]);
    vi.advanceTimersByTime(100);
    expect(acks).toEqual([10, 20_000]);
    vi.useRealTimers();
  });

  it('forwards the agent frame itself when the payload is a view into it', () => {
    const { s, ch } = make();
    s.attach(ch, 'control');
    const frame = encodeTermData('s1', enc.encode('zero-copy'));
    const f = decodeFrame(frame);
    s.output(f.op === 'termData' ? f.data : new Uint8Array());
    expect(ch.frames[0]!.buffer).toBe(frame.buffer);
    expect(Buffer.from(ch.frames[0]!).equals(Buffer.from(frame))).toBe(true);
  });
});
