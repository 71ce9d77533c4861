import type { Response } from 'express';
import { z } from 'zod';
import { ExecutionListItem, ExecutionView, pageOf, TASK_NAME_MAX, TaskDetail, TaskListItem, TaskView } from '../../protocol/index.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';
import { ApiError } from '../http/errors.js';
import { one, oneOf, pageShape, parseQuery } from '../http/query.js';
import { executionView } from './model.js';
import type { ExecRepo } from './repo.js';
import type { ExecService } from './service.js';

const Limit = z.union([z.number().int().min(0), z.string().regex(/^\d+(\.\d+)?%$/, 'a count or a percentage like "25%"')]);

/** Body of POST /api/tasks (the script library's run reuses its options). */
export const CreateTask = z
  .object({
    /** Shown and searched in the history; default: the script's first meaningful line. */
    name: z.string().max(TASK_NAME_MAX).nullable().optional(),
    script: z.string().min(1),
    interpreter: z.enum(['bash', 'sh', 'python3', 'node', 'shebang']).default('bash'),
    args: z.array(z.string().max(65_536)).max(256).default([]),
    /**
     * `NAME: "value"`, or `NAME: {value, secret: true}` for a write-only value: stored so the task
     * can be dispatched and re-run, never returned by the API, shown, logged or audited.
     */
    env: z
      .record(
        z
          .string()
          .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment names are [A-Za-z_][A-Za-z0-9_]*')
          .max(255),
        z.union([z.string().max(65_536), z.object({ value: z.string().max(65_536), secret: z.boolean().default(false) }).strict()]),
      )
      .default({}),
    cwd: z.string().min(1).max(4096).nullable().default(null),
    timeoutSec: z
      .number()
      .int()
      .positive()
      .max(30 * 86_400)
      .default(7200),
    targets: z.union([
      z.object({ selector: z.string().min(1).max(65_536) }).strict(),
      z.object({ agentIds: z.array(z.string().min(1).max(128)).min(1).max(1_000_000) }).strict(),
    ]),
    concurrency: Limit.nullable().optional(),
    maxFailures: Limit.nullable().optional(),
    offline: z.enum(['skip', 'queue']).default('skip'),
    queueTtlSec: z
      .number()
      .int()
      .positive()
      .max(30 * 86_400)
      .default(3600),
    /** base64 ed25519 signature (`muster sign --script`), for hosts whose policy requires signed scripts. */
    signature: z
      .string()
      .regex(/^[A-Za-z0-9+/]{86}==$/, 'signature must be the base64 of a 64-byte ed25519 signature')
      .nullable()
      .default(null),
  })
  .strict();

const Rerun = z
  .object({
    all: z.boolean().default(false),
    /** Whether `lost` executions are re-run too (required when there are some: they may have run). */
    includeLost: z.boolean().optional(),
  })
  .strict();

const TasksQuery = {
  ...pageShape(50, 1000),
  status: oneOf(['running', 'succeeded', 'failed', 'cancelled']).optional(),
  createdBy: one().max(128).optional(),
  since: one().optional().describe('epoch ms or ISO time'),
  until: one().optional().describe('epoch ms or ISO time'),
  idPrefix: one()
    .regex(/^[0-9a-fA-F-]{1,36}$/, 'must be 1 to 36 characters of [0-9a-f-]')
    .optional()
    .describe('tasks whose id starts with this'),
  q: one().max(256).optional().describe("words in the task's name or script"),
  target: one().max(256).optional().describe("part of a target agent's id or name"),
};
const ExecutionsQuery = { ...pageShape(50, 1000), agentId: one().max(128).optional(), status: one().max(32).optional() };
const OutputQuery = {
  stream: oneOf(['stdout', 'stderr']).optional().describe('one stream only (default: both, interleaved as received)'),
  raw: one().optional().describe('`1` or `true`: the bytes as received (application/octet-stream)'),
  color: one().optional().describe('`1` or `true`: stderr chunks in red (SGR 31 … 39), for a terminal-like display'),
  fromSeq: one().optional().describe('first chunk sequence number (catching up with the live stream)'),
  toSeq: one().optional().describe('end chunk sequence number (exclusive)'),
};

export const limitString = (v: number | string | null | undefined, what: string): string | null => {
  if (v == null) return null;
  if (what === 'concurrency' && (v === 0 || v === '0%')) throw new ApiError('bad_request', 'concurrency must be at least 1');
  return String(v);
};

function seqParam(v: string | undefined, name: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,10}$/.test(v)) throw new ApiError('bad_request', `${name} must be a non-negative integer`);
  return Number(v);
}

function time(v: unknown, name: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = /^\d+$/.test(String(v)) ? Number(v) : Date.parse(String(v));
  if (!Number.isFinite(n)) throw new ApiError('bad_request', `${name} must be epoch ms or an ISO date`);
  return n;
}

/** /api/tasks and /api/executions. */
export function execRoutes(svc: ExecService, repo: ExecRepo): ApiRouter {
  const r = new ApiRouter();

  r.post(
    '/tasks',
    {
      summary: 'Run a script on many agents',
      description: 'Answers the task with one execution per target (`skipped` for agents offline unless `offline: "queue"`). Audited.',
      role: 'operator',
      body: CreateTask,
      responses: { 201: TaskDetail },
    },
    async (req, res) => {
      const body = CreateTask.parse(req.body);
      const env: Record<string, string> = {};
      const secretEnv: string[] = [];
      for (const [k, v] of Object.entries(body.env)) {
        env[k] = typeof v === 'string' ? v : v.value;
        if (typeof v !== 'string' && v.secret) secretEnv.push(k);
      }
      const task = await svc.create(
        {
          ...body,
          env,
          secretEnv,
          concurrency: limitString(body.concurrency, 'concurrency'),
          maxFailures: limitString(body.maxFailures, 'maxFailures'),
        },
        actorOf(req),
      );
      res.status(201).json(task);
    },
  );

  r.get(
    '/tasks',
    {
      summary: 'List tasks',
      description: 'Newest first; without their scripts (`scriptBytes` says how long each is).',
      role: 'viewer',
      query: TasksQuery,
      responses: { 200: pageOf(TaskListItem, 'TaskList') },
    },
    async (req, res) => {
      const q = parseQuery(req, TasksQuery);
      res.json(
        await svc.listTasks({
          status: q.status,
          createdBy: q.createdBy,
          since: time(q.since, 'since'),
          until: time(q.until, 'until'),
          idPrefix: q.idPrefix?.toLowerCase(),
          q: q.q?.trim() || undefined,
          target: q.target?.trim() || undefined,
          limit: q.limit,
          offset: q.offset,
        }),
      );
    },
  );

  r.get('/tasks/:id', { summary: 'One task with its executions', role: 'viewer', responses: { 200: TaskDetail } }, async (req, res) => {
    res.json(await svc.getTask(String(req.params['id'])));
  });

  r.post(
    '/tasks/:id/cancel',
    {
      summary: 'Cancel a task',
      description: 'Pending executions end `cancelled`; running ones are signalled. 409 when the task already ended.',
      role: 'operator',
      responses: { 200: TaskView },
    },
    async (req, res) => {
      res.json(await svc.cancel(String(req.params['id']), actorOf(req)));
    },
  );

  r.post(
    '/tasks/:id/rerun',
    {
      summary: 'Re-run a task',
      description:
        'A new task on the agents that failed (or all with `all`). When some executions are `lost` (they may have run), `includeLost` must say whether to re-run them (409 `lost_unconfirmed`).',
      role: 'operator',
      body: Rerun,
      responses: { 201: TaskDetail },
    },
    async (req, res) => {
      const body = Rerun.parse(req.body ?? {});
      res.status(201).json(await svc.rerun(String(req.params['id']), actorOf(req), body));
    },
  );

  r.get(
    '/executions',
    {
      summary: 'List executions',
      description: "Across tasks (an agent's history), newest first.",
      role: 'viewer',
      query: ExecutionsQuery,
      responses: { 200: pageOf(ExecutionListItem, 'ExecutionList') },
    },
    async (req, res) => {
      const q = parseQuery(req, ExecutionsQuery);
      res.json(await svc.listExecutions({ agentId: q.agentId, status: q.status, limit: q.limit, offset: q.offset }));
    },
  );

  r.get('/executions/:id', { summary: 'One execution', role: 'viewer', responses: { 200: ExecutionView } }, async (req, res) => {
    res.json(executionView(await svc.getExecution(String(req.params['id']))));
  });

  r.get(
    '/executions/:id/output',
    {
      summary: 'Output of an execution',
      description:
        'Stored stdout/stderr, streamed. Headers: `X-Muster-Truncated` (1 when the output limit cut it), `X-Muster-Execution-Status`, and with a seq range `X-Muster-To-Seq`.',
      role: 'viewer',
      query: OutputQuery,
      responses: {
        200: { media: 'text/plain', description: 'the output as UTF-8 text (invalid bytes as U+FFFD), or with `raw` the bytes (application/octet-stream)' },
      },
    },
    async (req, res) => {
      const e = await svc.getExecution(String(req.params['id']));
      const q = parseQuery(req, OutputQuery);
      const stream = q.stream === 'stdout' ? 1 : q.stream === 'stderr' ? 2 : undefined;
      const raw = q.raw === '1' || q.raw === 'true';
      // For a terminal-like display: stderr chunks in red (SGR 31 … 39), the order across streams kept.
      const color = !raw && (q.color === '1' || q.color === 'true');
      const fromSeq = seqParam(q.fromSeq, 'fromSeq');
      const toSeq = seqParam(q.toSeq, 'toSeq');
      let seqs: { from: number; to: number } | undefined;
      if (fromSeq !== undefined || toSeq !== undefined) {
        // A client catching up with the live stream wants every chunk received so far: the end is
        // fixed now (and said in X-Muster-To-Seq, so it knows where live chunks take over), and the
        // read waits until those chunks are stored.
        seqs = { from: fromSeq ?? 0, to: Math.min(toSeq ?? e.nextSeq, e.nextSeq) };
        await svc.outputStored();
        res.setHeader('X-Muster-To-Seq', String(seqs.to));
      }
      res.setHeader('X-Muster-Truncated', e.truncated ? '1' : '0');
      res.setHeader('X-Muster-Execution-Status', e.status);
      res.setHeader('Content-Type', raw ? 'application/octet-stream' : 'text/plain; charset=utf-8');
      await writeOutput(res, repo, e.id, stream, raw, seqs, color);
    },
  );

  return r;
}

/**
 * Streams stored chunks in order, a page at a time (never the whole output in memory). Text mode
 * decodes each stream with its own streaming decoder, so a character split across chunks survives
 * and invalid bytes become U+FFFD; with `color`, each stderr chunk is wrapped in SGR red.
 */
async function writeOutput(
  res: Response,
  repo: ExecRepo,
  executionId: string,
  stream: 1 | 2 | undefined,
  raw: boolean,
  seqs?: { from: number; to: number },
  color = false,
): Promise<void> {
  const decoders = { 1: new TextDecoder('utf-8'), 2: new TextDecoder('utf-8') };
  let after = 0;
  for (;;) {
    const rows = await repo.outputPage(executionId, after, 256, stream, seqs);
    for (const row of rows) {
      let chunk: Buffer | string = raw ? row.data : decoders[row.stream].decode(row.data, { stream: true });
      if (color && row.stream === 2 && chunk.length) chunk = `\x1b[31m${chunk as string}\x1b[39m`;
      if (chunk.length && !res.write(chunk)) await new Promise((r) => res.once('drain', r));
    }
    if (rows.length < 256) break;
    after = rows[rows.length - 1]!.id;
  }
  if (!raw) for (const d of Object.values(decoders)) res.write(d.decode());
  res.end();
}
