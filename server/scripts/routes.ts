import { z } from 'zod';
import { pageOf, ScriptParamValue, ScriptSummary, ScriptTask, ScriptView, TaskDetail } from '../../protocol/index.js';
import { CreateTask, limitString } from '../exec/routes.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf, principal } from '../http/context.js';
import { ApiError } from '../http/errors.js';
import { one, pageShape, parseQuery } from '../http/query.js';
import { ParamDefs } from './params.js';
import type { ScriptService } from './service.js';

const NAME = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'names are letters, digits, . _ - (at most 128, starting with a letter or digit)')
  .refine((s) => !/^[0-9a-f]{8}-[0-9a-f]{4}-/.test(s), 'a name must not look like a script id');
const INTERPRETER = CreateTask.shape.interpreter.removeDefault();
const TAGS = z
  .array(
    z
      .string()
      .min(1)
      .max(64)
      .regex(/^[^,"\\]+$/, 'tags have no comma, quote or backslash'),
  )
  .max(32);

const Content = z
  .object({
    name: NAME,
    description: z.string().max(4096).default(''),
    interpreter: INTERPRETER.default('bash'),
    body: z.string().min(1),
    tags: TAGS.default([]),
    params: ParamDefs.default([]),
  })
  .strict();

const Patch = z
  .object({
    name: NAME.optional(),
    description: z.string().max(4096).optional(),
    interpreter: INTERPRETER.optional(),
    body: z.string().min(1).optional(),
    tags: TAGS.optional(),
    params: ParamDefs.optional(),
    /** Optimistic concurrency: refuse (409) when the script moved past this version. */
    baseVersion: z.number().int().positive().optional(),
  })
  .strict();

/** POST /api/tasks with a `scriptId`: the task options of an ad-hoc task, minus the script itself. */
export const RunScript = CreateTask.pick({
  name: true,
  cwd: true,
  timeoutSec: true,
  targets: true,
  concurrency: true,
  maxFailures: true,
  offline: true,
  queueTtlSec: true,
})
  .extend({
    scriptId: z.string().min(1).max(128),
    version: z.number().int().positive().optional(),
    params: z.record(z.string().max(64), ScriptParamValue).default({}),
  })
  .strict();

export const runOptions = (b: z.infer<typeof RunScript>) => ({
  ...b,
  concurrency: limitString(b.concurrency, 'concurrency'),
  maxFailures: limitString(b.maxFailures, 'maxFailures'),
});

const ScriptsQuery = {
  ...pageShape(100, 1000),
  q: one().max(256).optional().describe('words in the name, description or tags'),
  tag: one().max(64).optional(),
};
const VersionsPage = pageShape(100, 1000);
const TasksPage = pageShape(50, 1000);

const versionParam = (v: unknown) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new ApiError('bad_request', 'version must be a positive integer');
  return n;
};

/** /api/scripts, and POST /api/tasks when the body names a library script. */
export function scriptRoutes(svc: ScriptService, inUse: (scriptId: string) => Promise<number>): ApiRouter {
  const r = new ApiRouter();

  // Runs of a library script share POST /api/tasks (DESIGN.md); ad-hoc bodies pass on to exec.
  r.post(
    '/tasks',
    {
      summary: 'Run a library script',
      description:
        'A body with `scriptId` runs that script (its latest version unless `version`); parameters reach it as MUSTER_PARAM_<NAME> environment variables.',
      role: 'operator',
      body: RunScript,
      responses: { 201: TaskDetail },
      when: (req) => {
        const b = req.body as unknown;
        return Boolean(b && typeof b === 'object' && 'scriptId' in b);
      },
    },
    async (req, res) => {
      const body = RunScript.parse(req.body);
      res.status(201).json(await svc.run(runOptions(body), actorOf(req)));
    },
  );

  r.post(
    '/scripts',
    { summary: 'Add a script to the library', description: 'Version 1 of it. Audited.', role: 'operator', body: Content, responses: { 201: ScriptView } },
    async (req, res) => {
      const body = Content.parse(req.body);
      res.status(201).json(await svc.create(body, actorOf(req)));
    },
  );

  r.get(
    '/scripts',
    {
      summary: 'List library scripts',
      description: 'Their latest versions, without bodies.',
      role: 'viewer',
      query: ScriptsQuery,
      responses: { 200: pageOf(ScriptSummary, 'ScriptList') },
    },
    async (req, res) => {
      const q = parseQuery(req, ScriptsQuery);
      res.json(await svc.list({ q: q.q, tag: q.tag, limit: q.limit, offset: q.offset }));
    },
  );

  r.get('/scripts/:id', { summary: 'One script (by id or name), latest version', role: 'viewer', responses: { 200: ScriptView } }, async (req, res) => {
    res.json(await svc.get(String(req.params['id'])));
  });

  r.put(
    '/scripts/:id',
    {
      summary: 'Edit a script',
      description: 'A change makes a new version; `baseVersion` refuses (409) when the script moved on. Its owner or an admin. Audited.',
      role: 'operator',
      body: Patch,
      responses: { 200: ScriptView },
    },
    async (req, res) => {
      const body = Patch.parse(req.body);
      res.json(await svc.update(String(req.params['id']), body, principal(req), actorOf(req)));
    },
  );

  r.delete(
    '/scripts/:id',
    {
      summary: 'Delete a script',
      description: 'Its owner or an admin; 409 while schedules run it. Audited.',
      role: 'operator',
      responses: { 204: null },
    },
    async (req, res) => {
      await svc.remove(String(req.params['id']), principal(req), actorOf(req), inUse);
      res.status(204).end();
    },
  );

  r.get(
    '/scripts/:id/versions',
    {
      summary: 'Versions of a script',
      description: 'Newest first, without bodies.',
      role: 'viewer',
      query: VersionsPage,
      responses: { 200: pageOf(ScriptSummary, 'ScriptVersionList') },
    },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, VersionsPage);
      res.json(await svc.versions(String(req.params['id']), limit, offset));
    },
  );

  r.get(
    '/scripts/:id/versions/:version',
    {
      summary: 'One version of a script',
      role: 'viewer',
      params: { version: z.string().regex(/^[1-9]\d*$/) },
      responses: { 200: ScriptView },
    },
    async (req, res) => {
      res.json(await svc.version(String(req.params['id']), versionParam(req.params['version'])));
    },
  );

  r.get(
    '/scripts/:id/tasks',
    {
      summary: 'Tasks that ran a script',
      role: 'viewer',
      query: TasksPage,
      responses: { 200: pageOf(ScriptTask, 'ScriptTaskList') },
    },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, TasksPage);
      res.json(await svc.tasks(String(req.params['id']), limit, offset));
    },
  );

  return r;
}
