import { describe, expect, it } from 'vitest';
import {
  AgentToServer,
  ConsoleToServer,
  InvalidCounter,
  MessageDispatcher,
  REF_MAX,
  refOf,
  ServerToAgent,
  type AgentToServer as AgentMsg,
  type ConsoleToServer as ConsoleMsg,
} from '../../protocol/index.js';

const bye = JSON.stringify({ type: 'bye', reason: 'x' });

function agentSide(): { d: MessageDispatcher<AgentMsg, string>; calls: Array<[string, AgentMsg]> } {
  const calls: Array<[string, AgentMsg]> = [];
  const d = new MessageDispatcher<AgentMsg, string>(AgentToServer, {
    bye: (ctx: string, m: AgentMsg) => void calls.push([ctx, m]),
    labels: () => {
      throw new Error('sync boom');
    },
    error: () => Promise.reject(new Error('async boom')),
  });
  return { d, calls };
}

describe('MessageDispatcher', () => {
  it('decodes a valid message and runs its handler with the context', () => {
    const { d, calls } = agentSide();
    const r = d.decode(bye);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(
      d.dispatch('ctx-1', r.msg, () => {
        throw new Error('no error expected');
      }),
    ).toBe(true);
    expect(calls).toEqual([['ctx-1', { type: 'bye', reason: 'x' }]]);
  });

  it('refuses text that is not JSON as invalid_message, without a ref', () => {
    expect(agentSide().d.decode('not json')).toEqual({ ok: false, refusal: { code: 'invalid_message', message: 'message is not valid JSON' } });
  });

  it('refuses unknown and prototype-named types as unknown_type with ref = the type', () => {
    const { d } = agentSide();
    for (const type of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'no.such.thing']) {
      const r = d.decode(JSON.stringify({ type }));
      expect(r, type).toEqual({ ok: false, refusal: { code: 'unknown_type', message: `unknown message type ${JSON.stringify(type)}`, ref: type } });
    }
    // A __proto__ key in the JSON text is an own property, not the prototype: still no type.
    const p = d.decode('{"__proto__":{"type":"bye","reason":"x"}}');
    expect(p.ok === false && p.refusal.code).toBe('unknown_type');
    for (const text of ['null', '7', '[]', '{"type":7}', '{}']) {
      const r = d.decode(text);
      expect(r.ok === false && r.refusal.code, text).toBe('unknown_type');
      expect(r.ok === false && r.refusal.ref, text).toBeUndefined();
    }
  });

  it('refuses a known type with bad fields as invalid_message naming the field', () => {
    const r = agentSide().d.decode(JSON.stringify({ type: 'heartbeat', metrics: { cpuPercent: 'lots' } }));
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.refusal.code).toBe('invalid_message');
    expect(r.refusal.ref).toBe('heartbeat');
    expect(r.refusal.message).toMatch(/^invalid heartbeat: metrics\.cpuPercent: /);
  });

  it('ref is the correlation id when the message carries one, else the type; bounded', () => {
    const d = new MessageDispatcher<ConsoleMsg, null>(ConsoleToServer, {});
    const bad = d.decode(JSON.stringify({ type: 'term.open', ref: 'r7', agentId: 'a', cols: 'wide', rows: 24 }));
    expect(bad.ok === false && bad.refusal).toMatchObject({ code: 'invalid_message', ref: 'r7' });
    const unknown = d.decode(JSON.stringify({ type: 'nope', ref: 'r8' }));
    expect(unknown.ok === false && unknown.refusal).toMatchObject({ code: 'unknown_type', ref: 'r8' });
    expect(refOf({ type: 'x'.repeat(500) })).toHaveLength(REF_MAX);
    expect(refOf({ type: 't', ref: '' })).toBe('t');
    expect(refOf({ ref: 5, type: 't' })).toBe('t');
    expect(refOf(null)).toBeUndefined();
  });

  it('a known type without a handler is not dispatched', () => {
    const d = new MessageDispatcher<ConsoleMsg, null>(ConsoleToServer, {});
    const r = d.decode(JSON.stringify({ type: 'ping' }));
    expect(r.ok).toBe(true);
    if (r.ok) expect(d.dispatch(null, r.msg, () => {})).toBe(false);
    expect(d.has('ping')).toBe(false);
  });

  it('a table built from an object has no inherited entries', () => {
    const d = new MessageDispatcher<AgentMsg, null>(AgentToServer, { bye: () => {} });
    for (const t of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']) expect(d.has(t), t).toBe(false);
    expect(d.has('bye')).toBe(true);
  });

  it('handler failures, thrown or rejected, go to onError and not to the caller', async () => {
    const { d } = agentSide();
    const errors: Array<[string, string]> = [];
    const onError = (err: unknown, type: string): void => void errors.push([type, (err as Error).message]);
    for (const text of [JSON.stringify({ type: 'labels', labels: {} }), JSON.stringify({ type: 'error', code: 'c', message: 'm' })]) {
      const r = d.decode(text);
      if (!r.ok) throw new Error(r.refusal.message);
      expect(d.dispatch('c', r.msg, onError)).toBe(true);
    }
    await new Promise((r) => setImmediate(r));
    expect(errors).toEqual([
      ['labels', 'sync boom'],
      ['error', 'async boom'],
    ]);
  });

  it('knows every type of its schema', () => {
    const d = new MessageDispatcher<never, null>(ServerToAgent as never, {});
    expect(d.types.has('welcome')).toBe(true);
    expect(d.types.has('exec.run')).toBe(true);
    expect(d.types.has('hello')).toBe(false);
  });
});

describe('InvalidCounter', () => {
  it('goes over only after more than max refusals', () => {
    const c = new InvalidCounter(3);
    expect([c.count(), c.count(), c.count(), c.count(), c.count()]).toEqual([false, false, false, true, true]);
    expect(new InvalidCounter(0).count()).toBe(true);
  });
});
