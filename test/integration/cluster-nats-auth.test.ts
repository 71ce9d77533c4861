/**
 * MUSTER_NATS_URL with credentials: the official client ignores a URL's user and password, so the
 * cluster takes them apart (natsAuth). Checked against a real nats-server that requires them,
 * started on a free port for this file (the shared one at 4222 has no authentication).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { natsAuth } from '../../server/cluster/cluster.js';
import { freePort, waitFor } from '../helpers/harness.js';

const NATS_SERVER = ['/usr/sbin/nats-server', '/usr/bin/nats-server'].find((p) => fs.existsSync(p));

describe('MUSTER_NATS_URL credentials', () => {
  it('takes user and password (or a token) out of the URLs, the same for every server', () => {
    expect(natsAuth(['nats://muster:s%40cret@n1:4222', 'nats://n2:4222'])).toEqual({
      servers: ['nats://n1:4222', 'nats://n2:4222'],
      user: 'muster',
      pass: 's@cret',
    });
    expect(natsAuth(['tls://tok3n@n1:4222'])).toEqual({ servers: ['tls://n1:4222'], token: 'tok3n' });
    expect(natsAuth(['nats://n1:4222'])).toEqual({ servers: ['nats://n1:4222'] });
    expect(() => natsAuth(['nats://a:b@n1:4222', 'nats://a:c@n2:4222'])).toThrow(/different credentials/);
  });

  describe.skipIf(!NATS_SERVER && !process.env['CI'])('against a nats-server that requires them', () => {
    let proc: ChildProcess;
    let port = 0;
    beforeAll(async () => {
      if (!NATS_SERVER) throw new Error('nats-server is required with CI=true (Debian package nats-server)');
      port = await freePort();
      proc = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port), '--user', 'muster', '--pass', 'pw:with@signs'], { stdio: 'ignore' });
      await waitFor(
        () =>
          new Promise<boolean>((resolve) => {
            const c = net.connect(port, '127.0.0.1', () => {
              c.destroy();
              resolve(true);
            });
            c.on('error', () => resolve(false));
          }),
        'nats-server with authentication',
        30_000,
      );
    });
    afterAll(() => {
      proc?.kill();
    });

    it('connects with the URL’s credentials and is refused without them', async () => {
      const ok = natsAuth([`nats://muster:${encodeURIComponent('pw:with@signs')}@127.0.0.1:${port}`]);
      const nc = await connect({ ...ok, reconnect: false, timeout: 10_000 });
      await nc.flush();
      await nc.close();
      // The client alone ignores the URL's credentials: what natsAuth exists for.
      await expect(connect({ servers: `nats://muster:x@127.0.0.1:${port}`, reconnect: false, timeout: 10_000 })).rejects.toThrow(/AUTHORIZATION/i);
      const bad = natsAuth([`nats://muster:wrong@127.0.0.1:${port}`]);
      await expect(connect({ ...bad, reconnect: false, timeout: 10_000 })).rejects.toThrow(/AUTHORIZATION/i);
    });
  });
});
