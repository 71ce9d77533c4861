import { describe, expect, it } from 'vitest';
import pino from 'pino';
import type { Hello } from '../../protocol/index.js';
import type { Bus } from '../../server/bus/bus.js';
import type { TxBatcher } from '../../server/db/tx-batcher.js';
import { Fleet } from '../../server/fleet/fleet.js';
import type { AgentRepo, ConnectionRepo } from '../../server/fleet/repo.js';
import { createMetrics } from '../../server/metrics.js';

/**
 * An enrollment the server could not complete (its commit failed with the database away) and
 * could not undo either (the database still away): the undo is kept and retried until it is done,
 * so the agent (which never got its secret) can enroll again with its token, instead of the id
 * staying claimed with a secret nobody holds and the token's use spent.
 */
describe('Fleet: incomplete enrollments are undone once the database answers', () => {
  function setup() {
    const claimed = new Map<string, string>(); // agent id → secret hash stored
    let down = true;
    const calls: string[] = [];
    const repo = {
      claim: async (h: Hello, secretHash: string) => {
        calls.push('claim');
        if (down) throw Object.assign(new Error('Connection lost: The server closed the connection.'), { code: 'PROTOCOL_CONNECTION_LOST' });
        if (claimed.has(h.agentId)) throw new Error('Duplicate entry');
        claimed.set(h.agentId, secretHash);
      },
      unclaim: async (id: string, secretHash: string) => {
        calls.push('unclaim');
        if (down) throw Object.assign(new Error('Connection lost'), { code: 'PROTOCOL_CONNECTION_LOST' });
        if (claimed.get(id) !== secretHash) return false;
        claimed.delete(id);
        return true;
      },
    };
    const fleet = new Fleet({
      repo: repo as unknown as AgentRepo,
      connections: {} as ConnectionRepo,
      bus: { publish: () => {} } as unknown as Bus,
      log: pino({ level: 'silent' }),
      metrics: createMetrics(),
      writes: {} as TxBatcher,
      nodeId: 'n1',
      heartbeatIntervalMs: 5000,
      flushMs: 1000,
    });
    return { fleet, claimed, calls, setDown: (v: boolean) => (down = v) };
  }

  it('a failed undo is retried until it succeeds; the claim (committed after all) is then gone', async () => {
    const { fleet, claimed, setDown } = setup();
    // The claim's commit reached the database although the client saw the connection drop.
    claimed.set('agent-1', 'hash-1');
    await expect(fleet.abandonEnrollment('agent-1', 'hash-1', { labels: null })).rejects.toThrow('Connection lost');
    expect(fleet.pendingUndos()).toBe(1);
    await fleet.retryUndos(); // still down
    expect(fleet.pendingUndos()).toBe(1);
    expect(claimed.has('agent-1')).toBe(true);
    setDown(false);
    await fleet.retryUndos();
    expect(fleet.pendingUndos()).toBe(0);
    expect(claimed.has('agent-1')).toBe(false);
  });

  it("the agent's next enrollment on the same node undoes the pending claim first and then succeeds", async () => {
    const { fleet, claimed, calls, setDown } = setup();
    claimed.set('agent-2', 'old-hash');
    await expect(fleet.abandonEnrollment('agent-2', 'old-hash', { labels: null })).rejects.toThrow();
    setDown(false);
    const hello = { agentId: 'agent-2' } as Hello;
    // connect() goes on to the registration write (not faked here): the claim is what matters.
    await fleet.connect({ linkId: 1, remoteAddress: null } as never, hello, 'new-hash', { labels: null }).catch(() => {});
    expect(calls.slice(-2)).toEqual(['unclaim', 'claim']);
    expect(claimed.get('agent-2')).toBe('new-hash');
    expect(fleet.pendingUndos()).toBe(0);
  });
});
