import { describe, expect, it } from 'vitest';
import { acceptQueueWarning } from '../../server/http/listener.js';

describe('acceptQueueWarning', () => {
  it('is silent while the queue the kernel allows holds the fleet', () => {
    expect(acceptQueueWarning({ requested: 65535, kernelCap: 4096 }, 4096)).toBeNull();
    expect(acceptQueueWarning({ requested: 65535, kernelCap: 65535 }, 20_000)).toBeNull();
    expect(acceptQueueWarning({ requested: 65535, kernelCap: null }, 20_000)).toBeNull();
  });

  it('names net.core.somaxconn when the kernel caps the queue below the fleet', () => {
    const w = acceptQueueWarning({ requested: 65535, kernelCap: 4096 }, 19_850);
    expect(w).toContain('holds 4096 connections (net.core.somaxconn) but 19850 agents are enrolled');
    expect(w).toContain('sysctl -w net.core.somaxconn=65535');
    expect(w).toContain('deployment/sysctl-muster-server.conf');
    // A fleet beyond 65535 is told a value that holds it (listen() takes up to what was asked).
    expect(acceptQueueWarning({ requested: 200_000, kernelCap: 4096 }, 100_000)).toContain('somaxconn=100000');
  });

  it('names MUSTER_LISTEN_BACKLOG when the queue asked for is the shorter one', () => {
    const w = acceptQueueWarning({ requested: 100, kernelCap: 4096 }, 500);
    expect(w).toContain('holds 100 connections (MUSTER_LISTEN_BACKLOG) but 500 agents are enrolled');
    expect(w).toContain('raise MUSTER_LISTEN_BACKLOG');
    expect(acceptQueueWarning({ requested: 100, kernelCap: null }, 500)).toContain('raise MUSTER_LISTEN_BACKLOG');
  });
});
