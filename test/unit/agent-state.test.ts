import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentState } from '../../agent/state.js';

/**
 * The agent's identity on disk. A secret from a welcome is "unconfirmed" until a server accepts it
 * (the server undoes an enrollment whose agent never spoke after the welcome, so until then the
 * agent presents its enrollment token too); that mark survives a restart of the agent.
 */
describe('AgentState', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'muster-state-'));
    dirs.push(d);
    return d;
  };

  it('keeps its id; a new secret is unconfirmed across restarts until confirmed', () => {
    const dir = tmp();
    const a = new AgentState(dir);
    expect(a.getSecret()).toBeNull();
    expect(a.secretUnconfirmed()).toBe(false);

    a.saveSecret('s3cret');
    expect(a.getSecret()).toBe('s3cret');
    expect(a.secretUnconfirmed()).toBe(true);
    expect(fs.statSync(path.join(dir, 'agent-secret')).mode & 0o777).toBe(0o600);

    const b = new AgentState(dir);
    expect(b.agentId).toBe(a.agentId);
    expect(b.getSecret()).toBe('s3cret');
    expect(b.secretUnconfirmed()).toBe(true);

    b.confirmSecret();
    expect(b.secretUnconfirmed()).toBe(false);
    const c = new AgentState(dir);
    expect(c.getSecret()).toBe('s3cret');
    expect(c.secretUnconfirmed()).toBe(false);

    // A later enrollment (a new secret) is unconfirmed again.
    c.saveSecret('other');
    expect(new AgentState(dir).secretUnconfirmed()).toBe(true);
  });

  it('a mark without a secret (a crash between the two writes) is no unconfirmed secret', () => {
    const dir = tmp();
    new AgentState(dir);
    fs.writeFileSync(path.join(dir, 'agent-secret-unconfirmed'), '');
    const s = new AgentState(dir);
    expect(s.getSecret()).toBeNull();
    expect(s.secretUnconfirmed()).toBe(false);
  });
});
