import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentConfigError, loadAgentConfig } from '../../agent/config.js';
import { ConfigError, loadConfig, unknownVariables } from '../../server/config/config.js';

describe('server config', () => {
  it('has working defaults and is frozen', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 8080, host: '0.0.0.0', localAgent: true, heartbeatIntervalMs: 5000, agentConnectRate: 2000 });
    expect(c.enrollToken).toBeUndefined();
    expect(path.isAbsolute(c.dataDir)).toBe(true);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads MUSTER_* variables, coerces numbers and booleans, ignores empty ones', () => {
    const c = loadConfig({
      MUSTER_PORT: '9090',
      MUSTER_LOCAL_AGENT: 'false',
      MUSTER_HEARTBEAT_INTERVAL_MS: '500',
      MUSTER_DB_URL: 'mysql://u:p@h:3306/d',
      MUSTER_ENROLL_TOKEN: 'x'.repeat(16),
      MUSTER_HOST: '',
      MUSTER_AGENT_CONNECT_RATE: '50',
    });
    expect(c).toMatchObject({
      port: 9090,
      localAgent: false,
      heartbeatIntervalMs: 500,
      dbUrl: 'mysql://u:p@h:3306/d',
      host: '0.0.0.0',
      agentConnectRate: 50,
      enrollToken: 'x'.repeat(16),
    });
    expect(loadConfig({})).toMatchObject({ terminalWatchMaxLagBytes: 4 << 20, terminalRecordingMaxQueuedBytes: 8 << 20 });
    expect(loadConfig({ MUSTER_TERMINAL_WATCH_MAX_LAG_BYTES: String(1 << 20) }).terminalWatchMaxLagBytes).toBe(1 << 20);
  });

  it('reads MUSTER_NODE_URL as a path on the console origin or an http(s) URL, and refuses anything else', () => {
    expect(loadConfig({ MUSTER_NODE_URL: '/node/node-1/' }).nodeUrl).toBe('/node/node-1');
    expect(loadConfig({ MUSTER_NODE_URL: 'https://n1.example.com:8443' }).nodeUrl).toBe('https://n1.example.com:8443');
    expect(loadConfig({ MUSTER_NODE_URL: '' }).nodeUrl).toBeUndefined();
    for (const bad of ['node-1', '//evil.example/x', 'ftp://n1', 'javascript:alert(1)']) {
      expect(() => loadConfig({ MUSTER_NODE_URL: bad }), bad).toThrow(/MUSTER_NODE_URL: a path such as \/node\/node-1, or an http\(s\) URL/);
    }
  });

  it.each([
    [{ MUSTER_PORT: 'x' }, 'MUSTER_PORT'],
    [{ MUSTER_PORT: '-1' }, 'MUSTER_PORT'],
    [{ MUSTER_LOCAL_AGENT: 'maybe' }, 'MUSTER_LOCAL_AGENT'],
    [{ MUSTER_ENROLL_TOKEN: 'short' }, 'MUSTER_ENROLL_TOKEN must be at least 16'],
    [{ MUSTER_DB_URL: 'postgres://x' }, 'MUSTER_DB_URL'],
    [{ MUSTER_TLS_KEY: '/k' }, 'MUSTER_TLS_CERT and MUSTER_TLS_KEY'],
    [{ MUSTER_LOG_LEVEL: 'loud' }, 'MUSTER_LOG_LEVEL'],
    [{ MUSTER_AGENT_MAX_PAYLOAD: '10' }, 'MUSTER_AGENT_MAX_PAYLOAD'],
    [{ MUSTER_TERMINAL_WATCH_MAX_LAG_BYTES: '1000' }, 'MUSTER_TERMINAL_WATCH_MAX_LAG_BYTES'],
    [{ MUSTER_TERMINAL_RECORDING_MAX_QUEUED_BYTES: 'lots' }, 'MUSTER_TERMINAL_RECORDING_MAX_QUEUED_BYTES'],
  ])('rejects %o naming the variable', (env, msg) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(msg);
  });

  it('cluster: MUSTER_NATS_URL is a list, needs MySQL/MariaDB, and MUSTER_CLUSTER is a safe prefix', () => {
    const c = loadConfig({ MUSTER_NATS_URL: 'nats://a:4222, nats://b:4222', MUSTER_DB_URL: 'mysql://u:p@h:3306/d', MUSTER_NODE_ID: 'n1' });
    expect(c).toMatchObject({ natsUrl: ['nats://a:4222', 'nats://b:4222'], cluster: 'muster', nodeId: 'n1', clusterLeaseTtlMs: 6000 });
    expect(loadConfig({}).natsUrl).toBeUndefined();
    expect(() => loadConfig({ MUSTER_NATS_URL: 'nats://a:4222' })).toThrow(/MUSTER_NATS_URL: a cluster needs a shared MySQL\/MariaDB database/);
    expect(() => loadConfig({ MUSTER_NATS_URL: 'nats://a:4222', MUSTER_DB_URL: 'sqlite:/x.db' })).toThrow(/SQLite is one node only/);
    expect(() => loadConfig({ MUSTER_NATS_URL: 'http://a', MUSTER_DB_URL: 'mysql://u@h/d' })).toThrow(/MUSTER_NATS_URL: not a nats:\/\/ URL/);
    expect(() => loadConfig({ MUSTER_CLUSTER: 'a.b', MUSTER_DB_URL: 'mysql://u@h/d' })).toThrow(/MUSTER_CLUSTER must be/);
  });

  it('reports every bad variable at once', () => {
    try {
      loadConfig({ MUSTER_PORT: 'x', MUSTER_HEARTBEAT_INTERVAL_MS: 'y' });
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).toMatch(/MUSTER_PORT[\s\S]*MUSTER_HEARTBEAT_INTERVAL_MS/);
    }
  });

  it('table bounds: defaults, overrides, and bad values refused naming the variable', () => {
    expect(loadConfig({})).toMatchObject({
      clusterMaxRelayedExecutions: 100_000,
      clusterMaxAgentRoutes: 200_000,
      clusterMaxWatchedTasks: 10_000,
      anonConnectMaxAddresses: 10_000,
      agentConnectsPendingMax: 500,
      listenBacklog: 65535,
      loginRateMaxKeys: 10_000,
      connectWriteGatherMs: 20,
      connectWriteGroupMax: 500,
    });
    const c = loadConfig({
      MUSTER_CLUSTER_MAX_RELAYED_EXECUTIONS: '5000',
      MUSTER_CLUSTER_MAX_AGENT_ROUTES: '6000',
      MUSTER_CLUSTER_MAX_WATCHED_TASKS: '700',
      MUSTER_ANON_CONNECT_MAX_ADDRESSES: '800',
      MUSTER_AGENT_CONNECTS_PENDING_MAX: '40',
      MUSTER_LISTEN_BACKLOG: '64',
      MUSTER_LOGIN_RATE_MAX_KEYS: '900',
      MUSTER_CONNECT_WRITE_GATHER_MS: '0',
      MUSTER_CONNECT_WRITE_GROUP_MAX: '64',
    });
    expect(c).toMatchObject({
      clusterMaxRelayedExecutions: 5000,
      clusterMaxAgentRoutes: 6000,
      clusterMaxWatchedTasks: 700,
      anonConnectMaxAddresses: 800,
      agentConnectsPendingMax: 40,
      listenBacklog: 64,
      loginRateMaxKeys: 900,
      connectWriteGatherMs: 0,
      connectWriteGroupMax: 64,
    });
    for (const [name, bad] of [
      ['MUSTER_CLUSTER_MAX_RELAYED_EXECUTIONS', '10'],
      ['MUSTER_CLUSTER_MAX_AGENT_ROUTES', 'many'],
      ['MUSTER_CLUSTER_MAX_WATCHED_TASKS', '1.5'],
      ['MUSTER_ANON_CONNECT_MAX_ADDRESSES', '-1'],
      ['MUSTER_AGENT_CONNECTS_PENDING_MAX', '0'],
      ['MUSTER_LISTEN_BACKLOG', '0'],
      ['MUSTER_LOGIN_RATE_MAX_KEYS', '0'],
    ] as const) {
      expect(() => loadConfig({ [name]: bad }), name).toThrow(new RegExp(`invalid configuration:\\n  ${name}: `));
    }
  });

  it('unknown MUSTER_* variables: exactly those the server does not read, with a near server variable when there is one', () => {
    const env = {
      PATH: '/bin',
      MUSTER_PORT: '1',
      MUSTER_CLUSTER_MAX_WATCHED_TASKS: '700',
      MUSTER_HEARTBEAT_INTERVL_MS: '500', // typo
      MUSTER_FROBNICATE: '1',
      MUSTER_AGENT_ANYTHING: 'x', // the agent's (the local agent is given them)
      MUSTER_TEST_LOG_DIR: '/tmp',
      MUSTER_BENCH_NATS_URL: 'nats://x',
      MUSTER_PARAM_WHO: 'world', // a script's parameter
      MUSTER_TOKEN: 't', // the CLI's
      MUSTER_EXECUTION_ID: 'e', // set for scripts
      MUSTER_BENCH_SIMULATED_PRESENCE: '1',
    };
    expect(unknownVariables(env)).toEqual([{ name: 'MUSTER_FROBNICATE' }, { name: 'MUSTER_HEARTBEAT_INTERVL_MS', didYouMean: 'MUSTER_HEARTBEAT_INTERVAL_MS' }]);
    expect(unknownVariables({})).toEqual([]);
  });

  it('unknown MUSTER_* variables: none of the names the CLI, the agent, scripts, the build and the tests read is reported', () => {
    // Every MUSTER_ name written in the code of this repository that is not the server's.
    const root = path.resolve(__dirname, '../..');
    const names = new Set<string>();
    const walk = (dir: string): void => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        if (e.name === 'node_modules' || e.name === 'dist' || e.name.startsWith('.')) continue;
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.(ts|mjs|js|vue|sh)$/.test(e.name)) for (const m of fs.readFileSync(p, 'utf8').matchAll(/\bMUSTER_[A-Z0-9_]*[A-Z0-9]\b/g)) names.add(m[0]);
      }
    };
    for (const d of ['agent', 'cli', 'server', 'protocol', 'scripts', 'bench', 'test', 'deployment'])
      if (fs.existsSync(path.join(root, d))) walk(path.join(root, d));
    // Not configuration of anything: this test's own names, shell text run inside tests, and what
    // deployment/build-agent.sh hands its inner esbuild step (never a process's environment).
    const internal = ['MUSTER_HEARTBEAT_INTERVL_MS', 'MUSTER_FROBNICATE', 'MUSTER_RC_MARK', 'MUSTER_CGROUP_PROCS', 'MUSTER_VERSION__', 'MUSTER_BROKEN__'];
    for (const n of [...internal, 'MUSTER_ROOT', 'MUSTER_OUT', 'MUSTER_VERSION', 'MUSTER_BROKEN']) names.delete(n);
    expect(names.size).toBeGreaterThan(100);
    expect(unknownVariables(Object.fromEntries([...names].map((n) => [n, '1'])))).toEqual([]);
  });
});

describe('agent config', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentcfg-'));

  it('precedence: defaults < config file < environment < flags; labels merge', () => {
    const file = path.join(dir, 'agent.json');
    fs.writeFileSync(file, JSON.stringify({ server: 'ws://file:1', name: 'from-file', labels: { a: 'file', b: 'file' }, healthPort: 1111 }));
    const c = loadAgentConfig(['--config', file, '--name', 'from-flag', '--label', 'b=flag', '--label', 'c=flag'], {
      MUSTER_AGENT_SERVER: 'ws://env:2',
      MUSTER_AGENT_NAME: 'from-env',
      MUSTER_AGENT_LABELS: 'a=env',
    });
    expect(c).toMatchObject({ server: 'ws://env:2', name: 'from-flag', healthPort: 1111, configPath: file, backoffInitialMs: 1000, backoffMaxMs: 60_000 });
    expect(c.labels).toEqual({ a: 'env', b: 'flag', c: 'flag' });
  });

  it('refuses a config file setting it does not know, and one that is not an object', () => {
    const file = path.join(dir, 'typo.json');
    fs.writeFileSync(file, JSON.stringify({ server: 'ws://file:1', heartbeatIntervalSec: 5, labelz: { a: 'b' } }));
    expect(() => loadAgentConfig(['--config', file], {})).toThrow(/unknown settings "heartbeatIntervalSec", "labelz"/);
    fs.writeFileSync(file, '[]');
    expect(() => loadAgentConfig(['--config', file, '--server', 'ws://x'], {})).toThrow(/not a JSON object/);
    fs.writeFileSync(file, JSON.stringify({ server: 'ws://file:1', execHighWaterBytes: 2 << 20 }));
    expect(loadAgentConfig(['--config', file], {}).execHighWaterBytes).toBe(2 << 20);
  });

  it('exec output watermarks and the largest message are settings with defaults and bounds', () => {
    const c = loadAgentConfig(['--server', 'ws://x'], {});
    expect(c).toMatchObject({ execHighWaterBytes: 1 << 20, execLowWaterBytes: 256 << 10, maxPayload: 64 << 20 });
    const e = loadAgentConfig(['--server', 'ws://x'], {
      MUSTER_AGENT_EXEC_HIGH_WATER_BYTES: String(4 << 20),
      MUSTER_AGENT_EXEC_LOW_WATER_BYTES: String(1 << 20),
      MUSTER_AGENT_MAX_PAYLOAD: String(16 << 20),
    });
    expect(e).toMatchObject({ execHighWaterBytes: 4 << 20, execLowWaterBytes: 1 << 20, maxPayload: 16 << 20 });
    expect(() => loadAgentConfig(['--server', 'ws://x'], { MUSTER_AGENT_EXEC_LOW_WATER_BYTES: String(1 << 20) })).toThrow(
      /execLowWaterBytes must be below execHighWaterBytes/,
    );
    expect(() => loadAgentConfig(['--server', 'ws://x'], { MUSTER_AGENT_MAX_PAYLOAD: String(1 << 20) })).toThrow(/maxPayload/);
  });

  it('terminal download chunk and window, the execution journal and script output chunks are settings with defaults and bounds', () => {
    const base = { MUSTER_AGENT_SERVER: 'ws://x' };
    expect(loadAgentConfig([], base)).toMatchObject({
      terminalTransferChunkBytes: 64 << 10,
      terminalTransferWindowBytes: 1 << 20,
      execJournalKeep: 50_000,
      execOutputChunkBytes: 32 << 10,
    });
    const c = loadAgentConfig([], {
      ...base,
      MUSTER_AGENT_TERMINAL_TRANSFER_CHUNK_BYTES: String(256 << 10),
      MUSTER_AGENT_TERMINAL_TRANSFER_WINDOW_BYTES: String(4 << 20),
      MUSTER_AGENT_EXEC_JOURNAL_KEEP: '200000',
      MUSTER_AGENT_EXEC_OUTPUT_CHUNK_BYTES: String(128 << 10),
    });
    expect(c).toMatchObject({
      terminalTransferChunkBytes: 256 << 10,
      terminalTransferWindowBytes: 4 << 20,
      execJournalKeep: 200_000,
      execOutputChunkBytes: 128 << 10,
    });
    const file = path.join(dir, 'limits.json');
    fs.writeFileSync(file, JSON.stringify({ server: 'ws://file:1', terminalTransferChunkBytes: 32 << 10, execJournalKeep: 5000 }));
    expect(loadAgentConfig(['--config', file], {})).toMatchObject({ terminalTransferChunkBytes: 32 << 10, execJournalKeep: 5000 });
    // A refused value names the setting and where it came from.
    expect(() => loadAgentConfig([], { ...base, MUSTER_AGENT_EXEC_JOURNAL_KEEP: '10' })).toThrow(
      /^execJournalKeep: .* \(from MUSTER_AGENT_EXEC_JOURNAL_KEEP\)$/,
    );
    expect(() => loadAgentConfig(['--config', file, '--terminal-max-sessions', '0'], { MUSTER_AGENT_EXEC_OUTPUT_CHUNK_BYTES: 'x' })).toThrow(
      /terminalMaxSessions: .* \(from --terminal-max-sessions\)[\s\S]*execOutputChunkBytes: .* \(from MUSTER_AGENT_EXEC_OUTPUT_CHUNK_BYTES\)/,
    );
    fs.writeFileSync(file, JSON.stringify({ server: 'ws://file:1', execJournalKeep: 5 }));
    expect(() => loadAgentConfig(['--config', file], {})).toThrow(`(from config file ${file})`);
    for (const [name, bad, msg] of [
      ['MUSTER_AGENT_TERMINAL_TRANSFER_CHUNK_BYTES', String(2 << 20), /terminalTransferChunkBytes/],
      ['MUSTER_AGENT_TERMINAL_TRANSFER_CHUNK_BYTES', 'big', /terminalTransferChunkBytes/],
      ['MUSTER_AGENT_TERMINAL_TRANSFER_WINDOW_BYTES', String(32 << 10), /terminalTransferWindowBytes must be at least terminalTransferChunkBytes/],
      ['MUSTER_AGENT_EXEC_JOURNAL_KEEP', '10', /execJournalKeep/],
      ['MUSTER_AGENT_EXEC_OUTPUT_CHUNK_BYTES', String(2 << 20), /execOutputChunkBytes/],
    ] as const) {
      expect(() => loadAgentConfig([], { ...base, [name]: bad }), name).toThrow(msg);
    }
  });

  it.each([
    [[], /server/],
    [['--server', 'http://x'], /ws:\/\/ or wss:\/\//],
    [['--server', 'ws://x,http://y'], /ws:\/\/ or wss:\/\//],
    [['--server', 'ws://x', '--label', 'nokv'], /--label wants k=v/],
    [['--server', 'ws://x', '--label', 'bad key=v'], /labels/],
    [['--server', 'ws://x', '--unknown'], /Unknown option/],
    [['--server', 'ws://x', '--config', '/nonexistent/agent.json'], /cannot read config file/],
    [['--server', 'ws://x', '--health-port', 'abc'], /healthPort: must be a whole number/],
    [['--server', 'ws://x', '--health-port', '12abc'], /healthPort: must be a whole number/],
    [['--server', 'ws://x', '--health-port='], /healthPort: must be a whole number/],
    [['--server', 'ws://x', '--health-port', '1.5'], /healthPort: must be a whole number/],
    [['--server', 'ws://x', '--health-port', '-2'], /healthPort: must be a port 1-65535, 0 for a free port, or -1 to disable/],
    [['--server', 'ws://x', '--health-port=-7'], /healthPort: must be a port/],
    [['--server', 'ws://x', '--health-port', '70000'], /healthPort: must be at most 65535/],
  ])('rejects %j', (argv, msg) => {
    expect(() => loadAgentConfig(argv, {})).toThrow(AgentConfigError);
    expect(() => loadAgentConfig(argv, {})).toThrow(msg);
  });

  it('--flag value and --flag=value parse alike, negative values included', () => {
    const base = { MUSTER_AGENT_SERVER: 'ws://x' };
    for (const [argv, want] of [
      [['--health-port', '0'], 0],
      [['--health-port=0'], 0],
      [['--health-port', '-1'], -1],
      [['--health-port=-1'], -1],
      [['--health-port', '9100'], 9100],
      [['--health-port=9100'], 9100],
    ] as const) {
      expect(loadAgentConfig([...argv], base).healthPort).toBe(want);
    }
    expect(loadAgentConfig([], base).healthPort).toBe(7878);
    expect(loadAgentConfig([], { ...base, MUSTER_AGENT_HEALTH_PORT: '0' }).healthPort).toBe(0);
    expect(() => loadAgentConfig([], { ...base, MUSTER_AGENT_HEALTH_PORT: 'x' })).toThrow(/healthPort/);
    const a = loadAgentConfig(['--server', 'ws://s:1', '--name', 'n1', '--terminal-max-sessions', '4', '--label', 'k=v'], {});
    const b = loadAgentConfig(['--server=ws://s:1', '--name=n1', '--terminal-max-sessions=4', '--label=k=v'], {});
    expect(b).toEqual(a);
    expect(a).toMatchObject({ server: 'ws://s:1', name: 'n1', terminalMaxSessions: 4, labels: { k: 'v' } });
  });

  it('terminal watermarks: defaults from protocol/flow-control.ts; above the server overrun margin or inverted is refused', () => {
    const base = { MUSTER_AGENT_SERVER: 'ws://x' };
    expect(loadAgentConfig([], base)).toMatchObject({ terminalHighWatermark: 1 << 20, terminalLowWatermark: 256 << 10 });
    expect(loadAgentConfig([], { ...base, MUSTER_AGENT_TERMINAL_HIGH_WATERMARK: String(8 << 20) }).terminalHighWatermark).toBe(8 << 20);
    expect(() => loadAgentConfig([], { ...base, MUSTER_AGENT_TERMINAL_HIGH_WATERMARK: String((8 << 20) + 1) })).toThrow(/terminalHighWatermark/);
    expect(() => loadAgentConfig([], { ...base, MUSTER_AGENT_TERMINAL_LOW_WATERMARK: String(2 << 20) })).toThrow(/below terminalHighWatermark/);
  });
});
