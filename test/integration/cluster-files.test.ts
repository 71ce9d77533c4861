import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startThreeNodes, TEST_NATS_URL, testCluster, type ThreeNodes } from '../helpers/cluster.js';
import { Api, agentId, startAgent, tmpDir, waitFor, type TestServer } from '../helpers/harness.js';
import { withDb } from '../helpers/raw-agent.js';

/**
 * File distributions across nodes (issue 12): three real server nodes (dist/server.js) on one
 * MariaDB and one NATS with a cluster prefix of their own. The test asks NATS which node holds the
 * `waves` lease (it drives distributions) and connects one agent to each of the two other nodes, so
 * every transfer is relayed: the holder hands the command to the agent's node, which streams the
 * content (copied from the NATS object store: the revision was uploaded to node B only) and relays
 * the result back. Then a node that is not the lease holder is killed (-9); its agent comes back
 * through its second server and a second revision still reaches it.
 */
const cluster = testCluster({ leaseTtlMs: 8000 });
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const PATH = '/etc/muster-test/cluster.conf';

let three: ThreeNodes;
let db: ThreeNodes['db'];
const nodes = new Map<string, TestServer>();
const apis = new Map<string, Api>();
let holder = '';
/** The two nodes that do not hold the lease, each with one agent. */
let others: [string, string];
/** The agents, the node each is connected to, and the servers it knows. */
const agents: { id: string; root: string; node: string; servers: string[] }[] = [];

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

async function blobInfo(name: string): Promise<{ size: number } | null> {
  const nc = await connect({ servers: TEST_NATS_URL });
  try {
    const os = await nc.jetstream().views.os(`${cluster.name}-blobs`);
    const i = await os.info(name);
    return i && !i.deleted ? { size: i.size } : null;
  } finally {
    await nc.close();
  }
}

const ownerNode = async (id: string): Promise<string | null> =>
  (await withDb(db.url, (k) => k('agents').where({ id }).first('owner_node')))?.owner_node ?? null;
const api = (node: string) => apis.get(node)!;
const upload = (node: string, fileId: string, body: Buffer) =>
  api(node).req('POST', `/api/files/${fileId}/revisions`, new Uint8Array(body), { 'content-type': 'application/octet-stream' });

async function distributionDone(node: string, id: string, ms = 120_000): Promise<any> {
  return waitFor(
    async () => {
      const r = await api(node).get(`/api/distributions/${id}`);
      return r.status === 200 && ['succeeded', 'failed', 'cancelled', 'paused'].includes(r.body.state) ? r.body : null;
    },
    `distribution ${id} done`,
    ms,
    250,
  );
}

function expectOnDisk(root: string, content: Buffer): void {
  const file = path.join(root, PATH);
  expect(sha(fs.readFileSync(file))).toBe(sha(content));
  const st = fs.statSync(file);
  expect(st.mode & 0o7777).toBe(0o640);
  expect(st.uid).toBe(65534);
  expect(st.gid).toBe(65534);
}

beforeAll(async () => {
  const env = (node: string) => ({
    ...cluster.env(node),
    MUSTER_FILE_CHUNK_BYTES: '65536',
    MUSTER_FILE_WINDOW_BYTES: '131072',
    MUSTER_FILE_APPLY_TIMEOUT_SEC: '120',
  });
  three = await startThreeNodes(cluster, { env });
  db = three.db;
  nodes.set('node-a', three.a);
  nodes.set('node-b', three.b);
  nodes.set('node-c', three.c);
  for (const [name, s] of nodes) apis.set(name, await Api.login(s.url));
  holder = await waitFor(() => leaseHolder('waves'), 'a node holding the waves lease', 30_000);
  others = [...nodes.keys()].filter((n) => n !== holder) as [string, string];
  const policy = path.join(tmpDir('policy'), 'policy.json');
  fs.writeFileSync(policy, JSON.stringify({ allowedPaths: ['/etc/muster-test'] }), { mode: 0o600 });
  // The first agent knows both nodes that do not drive distributions (it picks one at random, and
  // moves to the other when its node dies); the second only the node the first did not pick.
  const start = async (name: string, servers: string[]) => {
    const root = tmpDir(`root-${name}`);
    const a = startAgent(nodes.get(servers[0]!)!, {
      name,
      labels: { grp: 'cfiles' },
      serverUrl: servers.map((n) => nodes.get(n)!.wsUrl).join(','),
      args: ['--policy', policy],
      env: { MUSTER_AGENT_FILE_ROOT: root, MUSTER_AGENT_FILE_CHECK_SEC: '0.5' },
    });
    const id = await agentId(a);
    await api(holder).waitAgent(id, 'online', 30_000);
    const node = await waitFor(async () => {
      const n = await ownerNode(id);
      return n && servers.includes(n) ? n : null;
    }, `${name} owned by the node it connected to`);
    return { id, root, node, servers };
  };
  const first = await start('files-1', others);
  agents.push(
    first,
    await start(
      'files-2',
      others.filter((n) => n !== first.node),
    ),
  );
  expect(new Set(agents.map((x) => x.node)).size).toBe(2);
}, 300_000);

afterAll(() => three.stop());

describe('cluster: file distributions reach agents on every node', () => {
  let fileId = '';
  const v1 = Buffer.concat([Buffer.from('listen 80;\n'), Buffer.alloc(400_000, 'a'), Buffer.from('\n# one\n')]);
  const v2 = Buffer.concat([Buffer.from('listen 8080;\n'), Buffer.alloc(300_000, 'b'), Buffer.from('\n# two\n')]);

  it('a revision uploaded on B and a distribution created on C reach the agents of both other nodes, results stored, audited once', async () => {
    const created = await api('node-b').post('/api/files', { path: PATH, owner: 'nobody', group: 'nogroup', mode: '0640' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    fileId = created.body.id;
    const r1 = await upload('node-b', fileId, v1);
    expect(r1.status, JSON.stringify(r1.body)).toBe(201);
    // Stored where every node reads it; only B has it on disk.
    expect(await blobInfo(`files/${fileId}/${sha(v1)}`)).toEqual({ size: v1.length });
    const onDisk = (node: string) => fs.existsSync(path.join(nodes.get(node)!.dataDir, 'files', fileId, sha(v1)));
    expect([...nodes.keys()].filter(onDisk)).toEqual(['node-b']);
    // Its bytes are served by a node that never received them.
    const got = await fetch(`${nodes.get('node-a')!.url}/api/files/${fileId}/revisions/1/content`, { headers: { cookie: api('node-a').cookie } });
    expect(got.status).toBe(200);
    expect(sha(Buffer.from(await got.arrayBuffer()))).toBe(sha(v1));

    const d = await api('node-c').post(`/api/files/${fileId}/distributions`, { targets: { selector: 'labels.grp == "cfiles"' }, waves: [1, '100%'] });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    const done = await distributionDone('node-a', d.body.id);
    expect(done.state, JSON.stringify(done.targets)).toBe('succeeded');
    expect(done.targets.map((t: any) => t.state)).toEqual(['applied', 'applied']);
    for (const x of agents) expectOnDisk(x.root, v1);
    // The agents' nodes streamed it: each copied the revision from the shared store.
    for (const x of agents) expect(onDisk(x.node)).toBe(true);
    // Results stored once per host, seen from every node.
    for (const n of nodes.keys()) {
      const f = await api(n).get(`/api/files/${fileId}`);
      expect(f.body.hosts.map((h: any) => [h.agentId, h.revision, h.state, h.sha256]).sort()).toEqual(agents.map((x) => [x.id, 1, 'ok', sha(v1)]).sort());
    }
    const audit = await withDb(db.url, (k) => k('audit_log').where({ target_id: fileId, action: 'file.distribute' }).select('details'));
    expect(audit).toHaveLength(1);
    expect(String(audit[0]!.details)).toContain(d.body.id);
  }, 300_000);

  it('kill -9 of a node that does not drive distributions: its agent comes back through another node and gets the next revision', async () => {
    // Ask again: on a loaded machine the lease may have moved.
    const now = await waitFor(() => leaseHolder('waves'), 'the waves lease holder', 30_000);
    // The first agent knows a second server; its node must not be the one driving distributions.
    const [victim, other] = agents as [(typeof agents)[0], (typeof agents)[0]];
    expect(victim.node, 'the waves lease moved to the node this test kills').not.toBe(now);
    await nodes.get(victim.node)!.kill();
    const alive = [...nodes.keys()].filter((n) => n !== victim.node);
    const r2 = await upload(alive[0]!, fileId, v2);
    expect(r2.status, JSON.stringify(r2.body)).toBe(201);
    expect(r2.body.revision).toBe(2);
    const d = await api(alive[1]!).post(`/api/files/${fileId}/distributions`, { targets: { selector: 'labels.grp == "cfiles"' } });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    const done = await distributionDone(alive[0]!, d.body.id, 180_000);
    expect(done.state, JSON.stringify(done.targets)).toBe('succeeded');
    expect(done.targets.map((t: any) => t.state)).toEqual(['applied', 'applied']);
    for (const x of [victim, other]) expectOnDisk(x.root, v2);
    // The victim's agent is back through its second server.
    expect(await ownerNode(victim.id)).toBe(victim.servers.find((n) => n !== victim.node));
    for (const n of alive) {
      const f = await api(n).get(`/api/files/${fileId}`);
      expect(f.body.hosts.map((h: any) => [h.agentId, h.revision, h.state]).sort()).toEqual(agents.map((x) => [x.id, 2, 'ok']).sort());
    }
    const audit = await withDb(db.url, (k) => k('audit_log').where({ target_id: fileId, action: 'file.distribute' }).count({ n: '*' }));
    expect(Number(audit[0]!.n)).toBe(2);
  }, 300_000);
});
