import { createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bigTmpDir,
  buildPackage,
  currentRelease,
  installAgent,
  installPaths,
  keygen,
  signPackage,
  stopAllSupervisors,
  supervise,
  trackBigDir,
  type Supervisor,
} from '../helpers/agent-packages.js';
import { startThreeNodes, TEST_NATS_URL, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { AGENT_START_MS, Api, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { withDb } from '../helpers/raw-agent.js';

/**
 * Rollouts, restart and live configuration across nodes (issue 12): three real server nodes
 * (dist/server.js) on one MariaDB and one NATS with a cluster prefix of their own. Node A starts
 * first and takes the `waves` lease (it drives rollouts and distributions; on a loaded machine
 * another node may take it over, so the test asks NATS who holds it when it matters); two agents
 * installed from real packages (1.0.0) run under a supervisor, one connected to node A, one to
 * node C (each knows B as its second server). Packages are uploaded to node B only (the others
 * read them from the NATS object store); rollouts are created and approved on other nodes; the
 * lease holder is killed (-9) while a rollout waits for approval between its waves, and another
 * node finishes it.
 */
// A lease TTL long enough that a node on a loaded 2-core machine renews it in time (takeover after kill -9 within it).
const cluster = testCluster({ leaseTtlMs: 8000 });
const env = cluster.env;

let three: ThreeNodes;
let db: ThreeNodes['db'];
let a: TestServer;
let b: TestServer;
let c: TestServer;
let apiA: Api;
let apiB: Api;
let apiC: Api;
let keys: { priv: string; pub: string };
const pkg = { base: '', good: '' };

interface Installed {
  root: string;
  sup: Supervisor;
  id: string;
}
let onA: Installed;
let onC: Installed;

/** The node holding a cluster lease, as NATS says. */
async function leaseHolder(name: string): Promise<string | null> {
  const nc = await connect({ servers: TEST_NATS_URL });
  try {
    const kv = await nc.jetstream().views.kv(`${cluster.name}-leases`);
    const e = await kv.get(name);
    return e && e.operation === 'PUT' && e.value.length ? e.string() : null;
  } finally {
    await nc.close();
  }
}

async function install(name: string, servers: string, via: TestServer, api: Api): Promise<Installed> {
  const root = bigTmpDir(`root-${name}`);
  await installAgent(root, [
    '--server',
    servers,
    '--token',
    via.enrollToken,
    '--package',
    pkg.base,
    '--public-key',
    keys.pub,
    '--name',
    name,
    '--label',
    'grp=waves',
  ]);
  const sup = supervise(root);
  const idFile = path.join(installPaths(root).state, 'agent-id');
  const id = await waitFor(() => (fs.existsSync(idFile) ? fs.readFileSync(idFile, 'utf8').trim() : ''), `${name} agent id`, AGENT_START_MS);
  await api.waitAgent(id, 'online', 30_000);
  return { root, sup, id };
}

async function upload(api: Api, file: string): Promise<any> {
  const sig = await signPackage(keys.priv, file);
  const r = await api.req(
    'POST',
    `/api/artifacts?filename=${encodeURIComponent(path.basename(file))}&signature=${encodeURIComponent(sig)}`,
    new Uint8Array(fs.readFileSync(file)),
    { 'content-type': 'application/octet-stream' },
  );
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body;
}

const ownerNode = async (id: string) => (await withDb(db.url, (k) => k('agents').where({ id }).first('owner_node')))?.owner_node ?? null;

beforeAll(async () => {
  const out = bigTmpDir('pkgs');
  [pkg.base, pkg.good] = await Promise.all([buildPackage('1.0.0', out), buildPackage('1.1.0', out)]);
  keys = await keygen(tmpDir('keys'));
  const rawPub = createPublicKey(fs.readFileSync(keys.pub, 'utf8')).export({ type: 'spki', format: 'der' }).subarray(-32).toString('base64');
  const nodeEnv = (node: string) => ({ ...env(node), MUSTER_UPDATE_TIMEOUT_SEC: '90', MUSTER_UPDATE_PUBLIC_KEY: rawPub });
  // A first: it takes the leases, so B and C forward rollout calls to it.
  three = await startThreeNodes(cluster, {
    env: nodeEnv,
    afterFirst: () => waitFor(async () => ((await leaseHolder('waves')) === 'node-a' ? true : null), 'node A holding the waves lease', 30_000),
  });
  ({ db, a, b, c } = three);
  for (const s of [a, b, c]) trackBigDir(s.dataDir);
  [apiA, apiB, apiC] = await Promise.all([Api.login(a.url), Api.login(b.url), Api.login(c.url)]);
  // Sorted by name in waves: wave-1 (on A) is the first wave, wave-2 (on C) the second.
  onA = await install('wave-1', `${a.wsUrl},${b.wsUrl}`, a, apiA);
  onC = await install('wave-2', `${c.wsUrl},${b.wsUrl}`, c, apiC);
  // (On a loaded machine an agent may have moved to B, its second server: still another node than the one driving.)
}, 600_000);

afterAll(async () => {
  await stopAllSupervisors();
  await three.stop();
});

/** Waits until the rollout is in one of `states`, asked on `api`. */
// Generous: a real download, install and restart per agent, on a shared 2-core machine.
const rolloutIn = (api: Api, id: string, states: string[], what: string, ms = 180_000) =>
  waitFor(
    async () => {
      const r = await api.get(`/api/rollouts/${id}`);
      return r.status === 200 && states.includes(r.body.state) ? r.body : null;
    },
    what,
    ms,
    250,
  );

describe('cluster: rollouts, restart and live configuration reach agents on every node', () => {
  it('a package uploaded to B and a rollout created on B update the agents on A and C (driven by the lease holder)', async () => {
    const good = await upload(apiB, pkg.good);
    // Only B received it: the others read it from the shared store.
    expect(fs.existsSync(path.join(b.dataDir, 'artifacts', `${good.id}.tar.gz`))).toBe(true);
    expect(fs.existsSync(path.join(a.dataDir, 'artifacts', `${good.id}.tar.gz`))).toBe(false);
    const pre = await apiB.post('/api/rollouts/preview', { artifactId: good.id, selector: 'labels.grp == "waves"' });
    expect(pre.body).toMatchObject({ matched: 2, update: 2, active: null });
    const r = await apiB.post('/api/rollouts', { artifactId: good.id, selector: 'labels.grp == "waves"', waves: [1, '100%'] });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body).toMatchObject({ state: 'running', total: 2 });
    // One at a time, whichever node is asked.
    const second = await apiC.post('/api/rollouts', { artifactId: good.id, selector: 'labels.grp == "waves"' });
    expect(second.status, JSON.stringify(second.body)).toBe(409);
    const done = await rolloutIn(apiC, r.body.id, ['succeeded', 'failed', 'paused'], 'the rollout done');
    expect(done.state, JSON.stringify(done.targets)).toBe('succeeded');
    expect(done.targets.map((t: any) => [t.agentName, t.state, t.fromVersion])).toEqual([
      ['wave-1', 'succeeded', '1.0.0'],
      ['wave-2', 'succeeded', '1.0.0'],
    ]);
    // The agents report the new version (seen from every node) and run it.
    for (const api of [apiA, apiB, apiC]) {
      for (const x of [onA, onC]) expect((await api.waitAgent(x.id, 'online')).version).toBe('1.1.0');
    }
    expect(currentRelease(onA.root)).toBe('1.1.0');
    expect(currentRelease(onC.root)).toBe('1.1.0');
    // Only B received the upload: a node an agent downloaded through copied it from the shared store.
    // Under load both agents may have moved to B (their second server): then C is asked directly,
    // so a node without the upload always serves it here, byte for byte, and keeps the copy.
    const copyOn = (n: TestServer) => path.join(n.dataDir, 'artifacts', `${good.id}.tar.gz`);
    if (!fs.existsSync(copyOn(a)) && !fs.existsSync(copyOn(c))) {
      const res = await fetch(`${c.url}/api/artifacts/${good.id}/download`, { headers: { cookie: apiC.cookie } });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(fs.readFileSync(pkg.good))).toBe(true);
      expect(fs.existsSync(copyOn(c))).toBe(true);
    }
    // Audited once.
    const audit = await withDb(db.url, (k) => k('audit_log').where({ target_id: r.body.id, action: 'rollout.create' }).count({ n: '*' }));
    expect(Number(audit[0]!.n)).toBe(1);
  }, 400_000);

  it('a configuration rule set on B reaches the agent on A, acknowledged and seen applied from every node', async () => {
    const rule = await apiB.post('/api/agent-config/rules', { agentId: onA.id, settings: { logLevel: 'debug' } });
    expect(rule.status, JSON.stringify(rule.body)).toBe(201);
    for (const api of [apiB, apiA, apiC]) {
      const st = await waitFor(
        async () => {
          const r = await api.get(`/api/agents/${onA.id}/config`);
          return r.body.state === 'applied' && r.body.applied?.revision === r.body.revision ? r.body : null;
        },
        'the rule applied',
        30_000,
      );
      expect(st).toMatchObject({ online: true, supported: true, desired: { logLevel: 'debug' } });
      expect(st.applied.effective).toMatchObject({ logLevel: 'debug' });
    }
    // Changed on C: the agent on A gets the new revision too.
    const patched = await apiC.patch(`/api/agent-config/rules/${rule.body.id}`, { settings: { logLevel: 'warn' } });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    await waitFor(
      async () => ((await apiB.get(`/api/agents/${onA.id}/config`)).body.applied?.effective?.logLevel === 'warn' ? true : null),
      'the changed rule applied',
      30_000,
    );
    expect((await apiB.delete(`/api/agent-config/rules/${rule.body.id}`)).status).toBe(204);
  }, 120_000);

  it('a restart asked on B restarts the agent on A (audited once)', async () => {
    const exits = onA.sup.exits.length;
    const r = await apiB.post(`/api/agents/${onA.id}/restart`);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    await waitFor(() => (onA.sup.exits.length > exits ? true : null), 'the agent on A to exit', 30_000);
    expect(onA.sup.exits[exits]).toEqual({ code: 0, signal: null });
    await apiB.waitAgent(onA.id, 'online', 30_000);
    const audit = await withDb(db.url, (k) => k('audit_log').where({ target_id: onA.id, action: 'agent.restart', ok: true }).count({ n: '*' }));
    expect(Number(audit[0]!.n)).toBe(1);
  }, 120_000);

  it('kill -9 of the lease holder while a rollout awaits approval between waves: another node takes over and finishes it', async () => {
    const base = await upload(apiB, pkg.base);
    const r = await apiC.post('/api/rollouts', {
      artifactId: base.id,
      selector: 'labels.grp == "waves"',
      waves: [1, '100%'],
      allowDowngrade: true,
      approval: true,
      soakSeconds: 1,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const waiting = await rolloutIn(apiB, r.body.id, ['awaiting_approval', 'failed', 'paused', 'succeeded'], 'awaiting approval after wave 1');
    expect(waiting).toMatchObject({ state: 'awaiting_approval', currentWave: 0, counts: { succeeded: 1, pending: 1 } });

    const nodes = { 'node-a': { s: a, api: apiA }, 'node-b': { s: b, api: apiB }, 'node-c': { s: c, api: apiC } } as const;
    const holder = (await leaseHolder('waves')) as keyof typeof nodes;
    expect(Object.keys(nodes)).toContain(holder);
    await nodes[holder].s.kill();
    const survivors = (Object.keys(nodes) as (keyof typeof nodes)[]).filter((n) => n !== holder);
    // Another node holds the lease within seconds (one TTL) and restores the run from the database.
    const next = await waitFor(
      async () => {
        const h = await leaseHolder('waves');
        return h && h !== holder ? h : null;
      },
      'another node holding the waves lease',
      30_000,
    );
    expect(survivors).toContain(next);
    // The agents are online through the surviving nodes (an agent of the killed node moved to its second server).
    for (const x of [onA, onC]) {
      await waitFor(async () => (survivors.includes((await ownerNode(x.id)) as keyof typeof nodes) ? true : null), 'the agent on a surviving node', 30_000);
    }
    // Asked on a surviving node that does not hold the lease when there is one (forwarded), else on the holder.
    const asked = survivors.find((n) => n !== next) ?? next;
    const api = nodes[asked as keyof typeof nodes].api;
    expect((await api.get(`/api/rollouts/${r.body.id}`)).body.state).toBe('awaiting_approval');
    // Answered 503 only while the lease changes hands.
    const ok = await waitFor(
      async () => {
        const x = await api.post(`/api/rollouts/${r.body.id}/approve`);
        if (x.status === 503) return null;
        return x;
      },
      'the approval accepted',
      30_000,
    );
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.currentWave).toBe(1);
    const done = await rolloutIn(api, r.body.id, ['succeeded', 'failed', 'paused'], 'the rollout finished by the new holder');
    expect(done.state, JSON.stringify(done.targets)).toBe('succeeded');
    // Every node shows the version the agents report now (applied from the owner's online event).
    for (const n of survivors) {
      for (const x of [onA, onC]) {
        await waitFor(
          async () => {
            const v = await nodes[n].api.waitAgent(x.id, 'online');
            return v.version === '1.0.0' ? v : null;
          },
          `${n} to show ${x.id} at 1.0.0`,
          10_000,
        );
      }
    }
    expect(currentRelease(onA.root)).toBe('1.0.0');
    expect(currentRelease(onC.root)).toBe('1.0.0');
    const approvals = await withDb(db.url, (k) => k('audit_log').where({ target_id: r.body.id, action: 'rollout.approve', ok: true }).count({ n: '*' }));
    expect(Number(approvals[0]!.n)).toBe(1);
    const stored = await withDb(db.url, (k) => k('rollouts').where({ id: r.body.id }).first('state'));
    expect(stored.state).toBe('succeeded');
  }, 400_000);
});
