/**
 * Task names (given, or the script's first meaningful line; a library run: the script's name),
 * stored and kept by a re-run, and the history's search by name, script content, target, user,
 * status and date range, on SQLite and MariaDB; the migration adds the column on both.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultTaskName } from '../../protocol/index.js';
import { createTask, waitTask } from '../helpers/exec.js';
import { Api, agentId, cleanup, databases, startAgent, startServer, type TestServer } from '../helpers/harness.js';

const dbs = await databases();

describe('defaultTaskName', () => {
  it('takes the first meaningful line: a leading comment, else the first command', () => {
    expect(defaultTaskName('#!/bin/bash\nset -euo pipefail\n\n# Rotate the nginx logs\nlogrotate -f /etc/logrotate.conf\n')).toBe('Rotate the nginx logs');
    expect(defaultTaskName('#!/bin/sh\n#####\n\n  apt-get update\n')).toBe('apt-get update');
    expect(defaultTaskName("'use strict';\n// print load\nconsole.log(1)")).toBe('print load');
    expect(defaultTaskName('\n\n')).toBe('empty script');
    expect(defaultTaskName(`echo ${'x'.repeat(300)}`)).toHaveLength(200);
  });
});

describe.each(dbs)('task names and history search (%s)', (db) => {
  let s: TestServer;
  let api: Api;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    s = await startServer({ db });
    api = await Api.login(s.url);
    for (const name of ['hist-web-1', 'hist-db-1']) {
      ids[name] = await agentId(startAgent(s, { name }));
      await api.waitAgent(ids[name]!, 'online');
    }
  });
  afterAll(cleanup);

  it('stores names, keeps them on re-run, and finds tasks by name, script, target, user, status and dates', async () => {
    const named = await createTask(api, { name: 'Nightly cache warm-up', script: 'echo warming caches\n', targets: { selector: 'hist-web-1' } });
    expect(named.name).toBe('Nightly cache warm-up');
    const unnamed = await createTask(api, {
      script: '#!/bin/sh\n# Check the disk of the database host\ndf -h / | grep -c unique_marker_42; exit 1\n',
      targets: { selector: 'hist-db-1' },
    });
    expect(unnamed.name).toBe('Check the disk of the database host');
    const bad = await api.post('/api/tasks', { name: 'x'.repeat(201), script: 'true', targets: { selector: 'all' } });
    expect(bad.status).toBe(400);
    const operator = await api.userWithRole('operator', 'hist-operator');
    const theirs = await createTask(operator, { script: 'uptime\n', targets: { selector: 'all' } });
    expect(theirs.name).toBe('uptime');
    await waitTask(api, named.id);
    expect((await waitTask(api, unnamed.id)).status).toBe('failed');
    await waitTask(api, theirs.id);
    // A library run is named after its script; a re-run keeps the task's name.
    const lib = await api.post('/api/scripts', { name: 'inventory-report', body: 'uname -a\n' });
    const libRun = await api.post('/api/tasks', { scriptId: lib.body.id, targets: { selector: 'hist-web-1' } });
    expect(libRun.body.name).toBe('inventory-report');
    const rerun = await api.post(`/api/tasks/${unnamed.id}/rerun`, {});
    expect(rerun.status).toBe(201);
    expect(rerun.body.name).toBe('Check the disk of the database host');
    await waitTask(api, rerun.body.id);
    expect((await api.get(`/api/tasks/${named.id}`)).body.name).toBe('Nightly cache warm-up');

    const find = async (q: string) => {
      const r = await api.get(`/api/tasks?${q}`);
      expect(r.status).toBe(200);
      return (r.body.items as Array<{ id: string }>).map((t) => t.id);
    };
    expect(await find('q=cache%20warm')).toEqual([named.id]);
    expect(await find('q=NIGHTLY')).toEqual([named.id]); // case does not matter
    expect(await find('q=unique_marker_42')).toEqual([rerun.body.id, unnamed.id]); // script content
    expect(await find('q=100%25')).toEqual([]); // % is literal, not a wildcard
    expect(await find('q=warm_up')).toEqual([]); // so is _ (it would match "warm-up")
    expect(await find(`target=${ids['hist-db-1']}`)).toEqual([rerun.body.id, theirs.id, unnamed.id]);
    expect(await find('target=web-1')).toEqual([libRun.body.id, theirs.id, named.id]);
    expect(await find('target=web-1&createdBy=hist-operator')).toEqual([theirs.id]);
    expect(await find('status=failed&q=disk')).toEqual([rerun.body.id, unnamed.id]);
    const at = Date.parse(named.createdAt);
    expect(await find(`until=${at}`)).toEqual([]);
    expect(await find(`since=${at}&until=${Date.parse(unnamed.createdAt) + 1}&q=e`)).toEqual([unnamed.id, named.id]);
    const list = await api.get(`/api/tasks?q=${encodeURIComponent('Check the disk')}&limit=1`);
    expect(list.body.total).toBe(2);
    expect(list.body.items[0]).toMatchObject({
      name: 'Check the disk of the database host',
      scriptPreview: '# Check the disk of the database host\ndf -h / | grep -c unique_marker_42; exit 1',
    });
    expect(list.body.items[0].script).toBeUndefined();
  });
});
