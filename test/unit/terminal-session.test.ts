import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { decodeFrame, encodeTermData, TERM_AGENT_MAX_UNACKED } from '../../protocol/index.js';
import { TerminalSession } from '../../server/terminals/session.js';
import { fakeConsole } from '../helpers/fake-console.js';

function make(opts: { watchMaxLagBytes?: number } = {}) {
  const ch = fakeConsole(1);
  const acks: number[] = [];
  const s = new TerminalSession({
    id: 's1',
    agentId: 'a1',
    owner: { id: 1, username: 'op' },
    cols: 80,
    rows: 24,
    scrollbackBytes: 1024,
    watchMaxLagBytes: opts.watchMaxLagBytes ?? 4 << 20,
    recorder: null,
    opener: { ch, ref: 'r1' },
    ackAgent: (b) => acks.push(b),
  });
  return { s, ch, acks };
}

describe('TerminalSession lifecycle', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('opening: the open deadline fires unless the agent confirms in time', () => {
    const { s } = make();
    const timedOut = vi.fn();
    s.awaitOpen(1000, timedOut);
    vi.advanceTimersByTime(999);
    expect(timedOut).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(timedOut).toHaveBeenCalledTimes(1);

    const b = make();
    const late = vi.fn();
    b.s.awaitOpen(1000, late);
    const opener = b.s.confirmOpen(4242);
    expect(opener).toEqual({ ch: b.ch, ref: 'r1' });
    expect(b.s.state).toBe('open');
    expect(b.s.pid).toBe(4242);
    vi.advanceTimersByTime(5000);
    expect(late).not.toHaveBeenCalled();
  });

  it('confirmOpen answers once: a repeated or late confirmation is false', () => {
    const { s } = make();
    expect(s.confirmOpen(1)).not.toBe(false);
    expect(s.confirmOpen(2)).toBe(false);
    expect(s.pid).toBe(1);
    const c = make();
    c.s.finish();
    expect(c.s.confirmOpen(3)).toBe(false);
    expect(c.s.state).toBe('closed');
  });

  it('an opener that left is forgotten: confirmOpen returns null and finish tells nobody', () => {
    const { s, ch } = make();
    expect(s.forgetOpener(fakeConsole(9))).toBe(false);
    expect(s.forgetOpener(ch)).toBe(true);
    expect(s.confirmOpen(7)).toBeNull();
    const c = make();
    c.s.forgetOpener(c.ch);
    expect(c.s.finish()).toMatchObject({ wasOpening: true, opener: null, attachments: [] });
  });

  it('finishing while opening hands back the waiting opener', () => {
    const { s, ch } = make();
    const timedOut = vi.fn();
    s.awaitOpen(1000, timedOut);
    const done = s.finish();
    expect(done).toMatchObject({ wasOpening: true, opener: { ch, ref: 'r1' }, closedBy: null });
    vi.advanceTimersByTime(5000);
    expect(timedOut).not.toHaveBeenCalled(); // finish cleared the deadline
    expect(s.finish()).toBeNull(); // exactly once
  });

  it('armDetach: only for an open session with no control console; a control attach cancels it', () => {
    const { s, ch } = make();
    const expired = vi.fn();
    expect(s.armDetach(1000, expired)).toBe(false); // still opening
    s.confirmOpen(1);
    s.attach(ch, 'control');
    expect(s.armDetach(1000, expired)).toBe(false); // a controller is attached
    s.detach(ch.id);
    s.attach(fakeConsole(2), 'watch');
    expect(s.armDetach(1000, expired)).toBe(true); // a watcher does not keep the shell
    vi.advanceTimersByTime(500);
    s.attach(fakeConsole(3), 'control');
    vi.advanceTimersByTime(5000);
    expect(expired).not.toHaveBeenCalled();
    s.detach(3);
    s.armDetach(1000, expired);
    vi.advanceTimersByTime(1000);
    expect(expired).toHaveBeenCalledTimes(1);
  });

  it('beginClose: open → closing with its own deadline, replacing the detach deadline; finish clears it', () => {
    const { s, ch } = make();
    s.confirmOpen(1);
    const detached = vi.fn();
    s.armDetach(100, detached);
    const closeTimedOut = vi.fn();
    expect(s.beginClose('closed by op', ch, 1000, closeTimedOut)).toBe(true);
    expect(s.state).toBe('closing');
    expect(s.live).toBe(false);
    expect(s.closeReason).toBe('closed by op');
    expect(s.beginClose('again', null, 1000, closeTimedOut)).toBe(false);
    expect(s.closeReason).toBe('closed by op');
    vi.advanceTimersByTime(999);
    expect(detached).not.toHaveBeenCalled();
    expect(closeTimedOut).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(closeTimedOut).toHaveBeenCalledTimes(1);

    const b = make();
    b.s.confirmOpen(1);
    const t = vi.fn();
    b.s.beginClose('bye', b.ch, 1000, t);
    expect(b.s.finish()).toMatchObject({ wasOpening: false, opener: null, closedBy: b.ch });
    vi.advanceTimersByTime(2000);
    expect(t).not.toHaveBeenCalled();
  });

  it('beginClose refuses an opening session (the service finishes it at once)', () => {
    const { s } = make();
    expect(s.beginClose('x', null, 1000, () => {})).toBe(false);
    expect(s.state).toBe('opening');
  });

  it('finish hands back the attached consoles once and stops acknowledging the agent', () => {
    const { s, ch, acks } = make();
    s.confirmOpen(1);
    s.attach(ch, 'control');
    const w = fakeConsole(2);
    s.attach(w, 'watch');
    s.output(new Uint8Array(10));
    s.ack(ch.id, 10); // held for the idle delay
    const done = s.finish();
    expect(done?.attachments.map((a) => a.ch.id).sort()).toEqual([1, 2]);
    expect(s.attachments.size).toBe(0);
    vi.advanceTimersByTime(1000);
    expect(acks).toEqual([]); // a closed session acknowledges nothing more
  });

  it('resize records a change once; input counts bytes and frames them for the agent', () => {
    const { s } = make();
    s.confirmOpen(1);
    expect(s.resize(80, 24)).toBe(false);
    expect(s.resize(100, 30)).toBe(true);
    expect([s.cols, s.rows]).toEqual([100, 30]);
    const frame = encodeTermData('s1', new TextEncoder().encode('ls\r'));
    const f = decodeFrame(frame);
    const out = s.input(f.op === 'termData' ? f.data : new Uint8Array());
    expect(out.buffer).toBe(frame.buffer); // the console's frame itself
    expect(s.bytesIn).toBe(3);
    const fresh = s.input(new TextEncoder().encode('x'));
    expect(decodeFrame(fresh)).toMatchObject({ op: 'termData', sessionId: 's1' });
    expect(s.bytesIn).toBe(4);
  });

  it('a watcher past watchMaxLagBytes is handed back as a laggard; an agent past the limit is an overrun', () => {
    const { s, ch } = make({ watchMaxLagBytes: 100 });
    s.confirmOpen(1);
    const w = fakeConsole(2);
    s.attach(w, 'watch');
    expect(s.output(new Uint8Array(101))).toEqual([]);
    const r = s.output(new Uint8Array(1));
    expect(Array.isArray(r) && r.map((a) => a.ch.id)).toEqual([2]);
    s.detach(2);
    s.attach(ch, 'control'); // never acknowledges
    expect(s.output(new Uint8Array(TERM_AGENT_MAX_UNACKED))).toBe('overrun');
  });
});
