import { defaultTaskName, type ExecutionState } from '../../protocol/index.js';
import type { Knex } from 'knex';
import { parseJson, type Db, type Dialect } from '../db/db.js';
import { mysqlPrepared, sqlitePrepared, sqliteValue } from '../db/prepared.js';
import { transaction } from '../db/retry.js';
import type { Execution, Task } from './model.js';
import { COLS, type ExecPatch } from './columns.js';
import { updateExecutionRows } from './row-updates.js';

export type { ExecPatch };

export function patchToRow(p: ExecPatch): Record<string, unknown> {
  const row: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    const col = COLS[k as keyof ExecPatch];
    if (col) row[col] = v;
  }
  return row;
}

const num = (v: unknown) => (v == null ? null : Number(v));

export function execFromRow(r: Record<string, unknown>): Execution {
  return {
    id: String(r['id']),
    taskId: String(r['task_id']),
    agentId: String(r['agent_id']),
    agentName: String(r['agent_name']),
    status: r['status'] as ExecutionState,
    reason: (r['reason'] as string | null) ?? null,
    exitCode: num(r['exit_code']),
    signal: (r['signal'] as string | null) ?? null,
    queuedUntil: num(r['queued_until']),
    dispatchedAt: num(r['dispatched_at']),
    startedAt: num(r['started_at']),
    finishedAt: num(r['finished_at']),
    outputBytes: Number(r['output_bytes'] ?? 0),
    nextSeq: Number(r['next_seq'] ?? 0),
    truncated: Boolean(r['truncated']),
    containment: (r['containment'] as string | null) ?? null,
    reconciledAt: num(r['reconciled_at']),
  };
}

function execToRow(e: Execution): Record<string, unknown> {
  return { id: e.id, task_id: e.taskId, agent_id: e.agentId, agent_name: e.agentName, ...patchToRow({ ...e }) };
}

export function taskFromRow(r: Record<string, unknown>): Task {
  return {
    id: String(r['id']),
    name: (r['name'] as string | null) || defaultTaskName(String(r['script'])),
    script: String(r['script']),
    scriptSha256: String(r['script_sha256']),
    interpreter: String(r['interpreter']),
    args: parseJson(r['args'], []),
    env: parseJson(r['env'], {}),
    cwd: (r['cwd'] as string | null) ?? null,
    timeoutSec: Number(r['timeout_sec']),
    targets: parseJson(r['targets'], null),
    concurrency: (r['concurrency'] as string | null) ?? null,
    maxFailures: (r['max_failures'] as string | null) ?? null,
    offline: r['offline'] === 'queue' ? 'queue' : 'skip',
    queueTtlSec: num(r['queue_ttl_sec']),
    createdBy: String(r['created_by']),
    createdAt: Number(r['created_at']),
    status: r['status'] as Task['status'],
    total: Number(r['total']),
    finishedAt: num(r['finished_at']),
    cancelledAt: num(r['cancelled_at']),
    cancelledBy: (r['cancelled_by'] as string | null) ?? null,
    rerunOf: (r['rerun_of'] as string | null) ?? null,
    scriptId: (r['script_id'] as string | null) ?? null,
    scriptVersion: num(r['script_version']),
    scheduleId: (r['schedule_id'] as string | null) ?? null,
    secretEnv: parseJson(r['secret_env'], []),
    signature: (r['signature'] as string | null) ?? null,
    ownerNode: (r['owner_node'] as string | null) ?? null,
  };
}

function taskToRow(t: Task): Record<string, unknown> {
  return {
    id: t.id,
    name: t.name,
    script: t.script,
    script_sha256: t.scriptSha256,
    interpreter: t.interpreter,
    args: JSON.stringify(t.args),
    env: JSON.stringify(t.env),
    cwd: t.cwd,
    timeout_sec: t.timeoutSec,
    targets: JSON.stringify(t.targets),
    concurrency: t.concurrency,
    max_failures: t.maxFailures,
    offline: t.offline,
    queue_ttl_sec: t.queueTtlSec,
    created_by: t.createdBy,
    created_at: t.createdAt,
    status: t.status,
    total: t.total,
    finished_at: t.finishedAt,
    cancelled_at: t.cancelledAt,
    cancelled_by: t.cancelledBy,
    rerun_of: t.rerunOf,
    script_id: t.scriptId,
    script_version: t.scriptVersion,
    schedule_id: t.scheduleId,
    secret_env: t.secretEnv.length ? JSON.stringify(t.secretEnv) : null,
    signature: t.signature,
    owner_node: t.ownerNode ?? null,
  };
}

export interface TaskFilter {
  status?: string;
  createdBy?: string;
  since?: number;
  until?: number;
  idPrefix?: string;
  /** Words found in the name or the script (each word must match one of them). */
  q?: string;
  /** An agent id, or part of a target's name, among the task's executions. */
  target?: string;
  limit: number;
  offset: number;
}

/** LIKE pattern text with its wildcards escaped (used with `escape '!'`). */
const escapeLike = (s: string) => s.replace(/[!%_]/g, (c) => `!${c}`);

/** One stored part of an output chunk (an execution_output row). */
export interface OutputRow {
  execution_id: string;
  seq: number;
  part: number;
  stream: number;
  data: Buffer;
}

/** tasks / executions / execution_output access. The hot writes are batched by ExecWriteBatcher into storeBatch. */
export class ExecRepo {
  /**
   * @param fenceNode cluster: this node's id. Task and execution row writes then apply only to
   *   tasks this node owns (`tasks.owner_node`, or none recorded): once another node has taken a
   *   task over, a node that was only cut off writes nothing more for it.
   */
  constructor(
    readonly db: Db,
    private readonly dialect: Dialect,
    private readonly fenceNode?: string,
  ) {}

  /**
   * Stores a batch in one transaction: output parts (a part already stored is ignored: resends
   * are harmless, and a fenced-out node's resends carry the same bytes) and execution row patches
   * (row-updates.ts; fenced to the tasks this node owns).
   */
  async storeBatch(rows: OutputRow[], updates: ReadonlyMap<string, ExecPatch>): Promise<void> {
    await this.db.transaction(async (trx) => {
      if (this.dialect === 'mysql') await insertMysql(trx, rows);
      else await insertSqlite(trx, rows);
      await updateExecutionRows(trx, this.dialect, updates, this.fenceNode);
    });
  }

  /**
   * Cluster: moves up to `limit` running tasks of `deadNode` to `newNode` in one locked transaction
   * (compare-and-set on `tasks.owner_node`: of two nodes taking over at once, each task goes to
   * exactly one) and returns their ids. Empty when none is left.
   */
  async claimFrom(deadNode: string, newNode: string, limit: number): Promise<string[]> {
    return transaction(this.db, async (trx) => {
      const rows = (await trx('tasks').where({ status: 'running', owner_node: deadNode }).orderBy('id').limit(limit).forUpdate().select('id')) as {
        id: string;
      }[];
      if (rows.length === 0) return [];
      const ids = rows.map((r) => r.id);
      await trx('tasks').whereIn('id', ids).where({ owner_node: deadNode }).update({ owner_node: newNode });
      return ids;
    });
  }

  /**
   * Cluster: of these tasks, the ones `node` owns, with their executions as stored (read after a
   * claim: no other node writes these rows any more, they are fenced).
   */
  async loadOwned(taskIds: readonly string[], node: string): Promise<{ tasks: Task[]; executions: Execution[] }> {
    if (taskIds.length === 0) return { tasks: [], executions: [] };
    const tasks = (await this.db('tasks').whereIn('id', taskIds).where({ owner_node: node })).map(taskFromRow);
    const owned = tasks.map((t) => t.id);
    const executions = owned.length ? (await this.db('executions').whereIn('task_id', owned).orderBy('id')).map(execFromRow) : [];
    return { tasks, executions };
  }

  /** Cluster: of these tasks, the ones another node owns now (taken over), with that node. */
  async ownedByOthers(taskIds: readonly string[], node: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (let i = 0; i < taskIds.length; i += 500) {
      const rows = (await this.db('tasks')
        .whereIn('id', taskIds.slice(i, i + 500))
        .whereNotNull('owner_node')
        .whereNot('owner_node', node)
        .select('id', 'owner_node')) as { id: string; owner_node: string }[];
      for (const r of rows) out.set(r.id, r.owner_node);
    }
    return out;
  }

  /**
   * Inserts a task and its executions in one transaction: on SQLite one prepared statement run per
   * execution (knex compiles a 500-row insert at ≈ 60 µs a row), on MySQL multi-row batches.
   */
  async createTask(t: Task, execs: Execution[]): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx('tasks').insert(taskToRow(t));
      const rows = execs.map(execToRow);
      const prepared = await sqlitePrepared(trx);
      if (prepared && rows.length > 0) {
        // Column names come from execToRow (fixed), never from input.
        const cols = Object.keys(rows[0]!);
        const stmt = prepared(`INSERT INTO "executions" (${cols.map((c) => `"${c}"`).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`);
        for (const r of rows) stmt.run(...cols.map((c) => sqliteValue(r[c])));
        return;
      }
      for (let i = 0; i < rows.length; i += 500) await trx('executions').insert(rows.slice(i, i + 500));
    });
  }

  /**
   * Writes a task row. Cluster (fenced): only while this node owns the task, or, for a reopen
   * (`status: 'running'` of a completed task whose lost execution reported late), while the task
   * is not running elsewhere, which makes this node its owner. False when the write was fenced
   * out (another node owns the task now) or the task is gone.
   */
  async updateTask(id: string, patch: Partial<Pick<Task, 'status' | 'finishedAt' | 'cancelledAt' | 'cancelledBy'>>): Promise<boolean> {
    const row: Record<string, unknown> = {};
    if (patch.status !== undefined) row['status'] = patch.status;
    if (patch.finishedAt !== undefined) row['finished_at'] = patch.finishedAt;
    if (patch.cancelledAt !== undefined) row['cancelled_at'] = patch.cancelledAt;
    if (patch.cancelledBy !== undefined) row['cancelled_by'] = patch.cancelledBy;
    const q = this.db('tasks').where({ id });
    const node = this.fenceNode;
    if (node !== undefined) {
      if (patch.status === 'running') {
        row['owner_node'] = node;
        q.where((w) => void w.whereNot('status', 'running').orWhere('owner_node', node).orWhereNull('owner_node'));
      } else q.where((w) => void w.where('owner_node', node).orWhereNull('owner_node'));
    }
    return (await q.update(row)) > 0;
  }

  async getTask(id: string): Promise<Task | null> {
    const r = await this.db('tasks').where({ id }).first();
    return r ? taskFromRow(r) : null;
  }

  async executionsOf(taskId: string): Promise<Execution[]> {
    return (await this.db('executions').where({ task_id: taskId }).orderBy('agent_name').orderBy('id')).map(execFromRow);
  }

  async getExecution(id: string): Promise<Execution | null> {
    const r = await this.db('executions').where({ id }).first();
    return r ? execFromRow(r) : null;
  }

  /**
   * Tasks with at least one execution not final, and those executions (server start). With
   * `ownerNode` (a cluster): only the tasks that node owns (and those stored before owners were).
   */
  async loadActive(ownerNode?: string): Promise<{ tasks: Task[]; executions: Execution[] }> {
    const q = this.db('tasks').where({ status: 'running' });
    if (ownerNode !== undefined) q.where((w) => void w.where('owner_node', ownerNode).orWhereNull('owner_node'));
    const taskRows = await q;
    const tasks = taskRows.map(taskFromRow);
    const executions: Execution[] = [];
    for (let i = 0; i < tasks.length; i += 500) {
      const ids = tasks.slice(i, i + 500).map((t) => t.id);
      executions.push(...(await this.db('executions').whereIn('task_id', ids).orderBy('id')).map(execFromRow));
    }
    return { tasks, executions };
  }

  /** Highest stored output sequence + 1 and stored bytes of an execution (after a crash the row may lag). */
  async storedOutput(executionId: string): Promise<{ nextSeq: number; bytes: number }> {
    const r = (await this.db('execution_output')
      .where({ execution_id: executionId })
      .max({ m: 'seq' })
      .sum({ b: this.db.raw('length(data)') })
      .first()) as { m: number | string | null; b: number | string | null } | undefined;
    return { nextSeq: r?.m == null ? 0 : Number(r.m) + 1, bytes: Number(r?.b ?? 0) };
  }

  async listTasks(f: TaskFilter): Promise<{ tasks: Task[]; total: number }> {
    const q = this.db('tasks');
    if (f.status) q.where('status', f.status);
    if (f.createdBy) q.where('created_by', f.createdBy);
    if (f.since != null) q.where('created_at', '>=', f.since);
    if (f.until != null) q.where('created_at', '<', f.until);
    // The route allows only [0-9a-f-] here, so the prefix holds no LIKE wildcard.
    if (f.idPrefix) q.where('id', 'like', `${f.idPrefix}%`);
    // Tasks whose stored name is null (before names existed) are found by their script, which holds the default name.
    for (const word of (f.q ?? '').split(/\s+/).filter(Boolean).slice(0, 8)) {
      const like = `%${escapeLike(word)}%`;
      q.where((w) => w.whereRaw(`tasks.name like ? escape '!'`, [like]).orWhereRaw(`tasks.script like ? escape '!'`, [like]));
    }
    if (f.target) {
      const like = `%${escapeLike(f.target)}%`;
      const target = f.target;
      q.whereExists((s) =>
        s
          .select(this.db.raw('1'))
          .from('executions')
          .whereRaw('executions.task_id = tasks.id')
          .andWhere((w) => w.where('executions.agent_id', target).orWhereRaw(`executions.agent_name like ? escape '!'`, [like])),
      );
    }
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(f.limit).offset(f.offset);
    return { tasks: rows.map(taskFromRow), total: Number(n) };
  }

  /** Execution counts per state for several tasks, in one query. */
  async countsFor(taskIds: string[]): Promise<Map<string, Partial<Record<ExecutionState, number>>>> {
    const out = new Map<string, Partial<Record<ExecutionState, number>>>();
    if (taskIds.length === 0) return out;
    const rows = await this.db('executions').whereIn('task_id', taskIds).groupBy('task_id', 'status').select('task_id', 'status').count({ n: '*' });
    for (const r of rows as Array<{ task_id: string; status: ExecutionState; n: number | string }>) {
      const c = out.get(r.task_id) ?? {};
      c[r.status] = Number(r.n);
      out.set(r.task_id, c);
    }
    return out;
  }

  /** Executions across tasks (newest task first), e.g. one agent's history; with the task's creation time and script head. */
  async listExecutions(f: { agentId?: string; status?: string; limit: number; offset: number }) {
    const q = this.db('executions').join('tasks', 'tasks.id', 'executions.task_id');
    if (f.agentId) q.where('executions.agent_id', f.agentId);
    if (f.status) q.where('executions.status', f.status);
    const [{ n }] = (await q.clone().count({ n: '*' })) as [{ n: number | string }];
    const rows = await q
      .orderBy('tasks.created_at', 'desc')
      .orderBy('executions.id')
      .limit(f.limit)
      .offset(f.offset)
      .select('executions.*', 'tasks.created_at as task_created_at', this.db.raw('substr(tasks.script, 1, 200) as script_head'));
    return {
      items: rows.map((r: Record<string, unknown>) => ({
        e: execFromRow(r),
        createdAt: Number(r['task_created_at']),
        scriptHead: String(r['script_head'] ?? ''),
      })),
      total: Number(n),
    };
  }

  /** Output chunks in sequence order, a page at a time; `seqs` limits them to [from, to). */
  async outputPage(
    executionId: string,
    afterId: number,
    limit: number,
    stream?: 1 | 2,
    seqs?: { from: number; to?: number },
  ): Promise<Array<{ id: number; seq: number; stream: 1 | 2; data: Buffer }>> {
    const q = this.db('execution_output').where({ execution_id: executionId }).where('id', '>', afterId);
    if (stream) q.where({ stream });
    if (seqs) {
      q.where('seq', '>=', seqs.from);
      if (seqs.to !== undefined) q.where('seq', '<', seqs.to);
    }
    const rows = await q.orderBy('id').limit(limit).select('id', 'seq', 'stream', 'data');
    return rows.map((r: Record<string, unknown>) => ({
      id: Number(r['id']),
      seq: Number(r['seq']),
      stream: Number(r['stream']) as 1 | 2,
      data: Buffer.isBuffer(r['data']) ? r['data'] : Buffer.from(r['data'] as Uint8Array),
    }));
  }
}

/**
 * SQLite: one statement prepared once and run per chunk (bytes bound as BLOBs); without a
 * better-sqlite3 connection, multi-row inserts through knex.
 */
async function insertSqlite(trx: Knex.Transaction, rows: OutputRow[]): Promise<void> {
  const prepared = await sqlitePrepared(trx);
  if (prepared) {
    const stmt = prepared(
      'INSERT INTO "execution_output" ("execution_id", "seq", "part", "stream", "data") VALUES (?, ?, ?, ?, ?) ON CONFLICT ("execution_id", "seq", "part") DO NOTHING',
    );
    for (const r of rows) stmt.run(r.execution_id, r.seq, r.part, r.stream, r.data);
    return;
  }
  for (let i = 0; i < rows.length; i += 100) {
    await trx('execution_output')
      .insert(rows.slice(i, i + 100))
      .onConflict(['execution_id', 'seq', 'part'])
      .ignore();
  }
}

/** Rows per prepared INSERT: at most MYSQL_MAX_ROWS and about MYSQL_MAX_BYTES of output. */
const MYSQL_MAX_ROWS = 1024;
const MYSQL_MAX_BYTES = 1 << 20;
const mysqlInsert = (n: number) =>
  `INSERT IGNORE INTO execution_output (execution_id, seq, part, stream, data) VALUES ${new Array<string>(n).fill('(?,?,?,?,?)').join(',')}`;

/**
 * MySQL: prepared statements on the transaction's own connection (binary protocol), so output
 * bytes go to the server as they are: knex's text protocol would turn every byte into two hex
 * characters inside one large SQL string, which costs CPU and hundreds of MB of transient heap.
 *
 * Each statement is one round trip: small chunks (a 10,000-host task's results) go up to
 * MYSQL_MAX_ROWS at a time, large ones as many as fit in MYSQL_MAX_BYTES. Row counts are powers
 * of two, so a connection prepares at most eleven distinct statements (the server's
 * max_prepared_stmt_count is shared by every connection).
 */
async function insertMysql(trx: Knex.Transaction, rows: OutputRow[]): Promise<void> {
  const run = (await mysqlPrepared(trx))!;
  for (let i = 0; i < rows.length;) {
    let n = 1;
    let bytes = rows[i]!.data.length;
    while (n < MYSQL_MAX_ROWS && i + n < rows.length && bytes + rows[i + n]!.data.length <= MYSQL_MAX_BYTES) bytes += rows[i + n++]!.data.length;
    n = 2 ** Math.floor(Math.log2(n));
    const values: unknown[] = [];
    for (let j = i; j < i + n; j++) {
      const r = rows[j]!;
      values.push(r.execution_id, r.seq, r.part, r.stream, r.data);
    }
    i += n;
    await run(mysqlInsert(n), values);
  }
}
