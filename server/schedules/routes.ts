import { z } from 'zod';
import { pageOf, ScheduleCalendar, ScheduleHistory, ScheduleView, ScriptParamValue } from '../../protocol/index.js';
import { CreateTask, limitString } from '../exec/routes.js';
import { ApiRouter } from '../http/api-router.js';
import { actorOf, principal } from '../http/context.js';
import { ApiError } from '../http/errors.js';
import { int, one, pageShape, parseQuery } from '../http/query.js';
import { scheduleView, type ScheduleService } from './service.js';

const NAME = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$/, 'names are letters, digits, space, . _ - (at most 128)')
  .refine((s) => !/^[0-9a-f]{8}-[0-9a-f]{4}-/.test(s), 'a name must not look like a schedule id')
  .refine((s) => s !== 'calendar', '"calendar" is taken by GET /api/schedules/calendar');

const Fields = {
  name: NAME,
  scriptId: z.string().min(1).max(128),
  /** A version, or null for the latest at each fire. */
  version: z.number().int().positive().nullable(),
  params: z.record(z.string().max(64), ScriptParamValue),
  selector: z.string().min(1).max(65_536),
  timeoutSec: CreateTask.shape.timeoutSec.removeDefault(),
  concurrency: CreateTask.shape.concurrency,
  maxFailures: CreateTask.shape.maxFailures,
  offline: z.enum(['skip', 'queue']),
  queueTtlSec: CreateTask.shape.queueTtlSec.removeDefault(),
  cron: z.string().min(1).max(255).nullable(),
  timeZone: z.string().min(1).max(64),
  intervalSec: z
    .number()
    .int()
    .positive()
    .max(366 * 86_400)
    .nullable(),
  enabled: z.boolean(),
  overlap: z.enum(['skip', 'allow']),
  missed: z.enum(['skip', 'run_once']),
};

const Create = z
  .object({
    ...Fields,
    version: Fields.version.default(null),
    params: Fields.params.default({}),
    timeoutSec: Fields.timeoutSec.default(7200),
    offline: Fields.offline.default('skip'),
    queueTtlSec: Fields.queueTtlSec.default(3600),
    cron: Fields.cron.default(null),
    timeZone: Fields.timeZone.default('UTC'),
    intervalSec: Fields.intervalSec.default(null),
    enabled: Fields.enabled.default(true),
    overlap: Fields.overlap.default('skip'),
    missed: Fields.missed.default('skip'),
  })
  .strict();

const Patch = z.object(Fields).partial().strict();
const SchedulePage = pageShape(100, 1000);
const HistoryPage = pageShape(50, 1000);
const CalendarQuery = {
  from: one().optional().describe('start of the window: ISO time or epoch ms (default: now)'),
  days: int()
    .optional()
    .describe('length of the window in days, 1 to 31 (default 7)')
    .transform((v) => v ?? 7)
    .refine((v) => v >= 1 && v <= 31, 'must be 1 to 31'),
};

/** /api/schedules. */
export function scheduleRoutes(svc: ScheduleService): ApiRouter {
  const r = new ApiRouter();
  const limits = <T extends { concurrency?: number | string | null | undefined; maxFailures?: number | string | null | undefined }>(b: T) =>
    ({
      ...b,
      ...(b.concurrency !== undefined ? { concurrency: limitString(b.concurrency, 'concurrency') } : {}),
      ...(b.maxFailures !== undefined ? { maxFailures: limitString(b.maxFailures, 'maxFailures') } : {}),
    }) as Omit<T, 'concurrency' | 'maxFailures'> & { concurrency?: string | null; maxFailures?: string | null };

  r.post(
    '/schedules',
    {
      summary: 'Create a schedule',
      description: 'Runs a library script on a cron (5 fields and a time zone) or every `intervalSec`. Audited.',
      role: 'operator',
      body: Create,
      responses: { 201: ScheduleView },
    },
    async (req, res) => {
      const b = limits(Create.parse(req.body));
      res.status(201).json(await svc.create({ ...b, concurrency: b.concurrency ?? null, maxFailures: b.maxFailures ?? null }, actorOf(req)));
    },
  );

  r.get(
    '/schedules',
    {
      summary: 'List schedules',
      role: 'viewer',
      query: SchedulePage,
      responses: { 200: pageOf(ScheduleView, 'ScheduleList') },
    },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, SchedulePage);
      res.json(await svc.list(limit, offset));
    },
  );

  // Before /schedules/:id, which would take "calendar" for a name.
  r.get(
    '/schedules/calendar',
    {
      summary: 'Calendar of next runs',
      description:
        'Every due time of every enabled schedule in a window (`from`, `days`), soonest first; at most MUSTER_SCHEDULE_CALENDAR_MAX_FIRES of them (`truncated` says there are more).',
      role: 'viewer',
      query: CalendarQuery,
      responses: { 200: ScheduleCalendar },
    },
    async (req, res) => {
      const q = parseQuery(req, CalendarQuery);
      let from = Date.now();
      if (q.from !== undefined) {
        from = /^\d+$/.test(q.from) ? Number(q.from) : Date.parse(q.from);
        if (!Number.isFinite(from)) throw new ApiError('bad_request', 'query parameter from: must be epoch ms or an ISO time');
      }
      res.json(await svc.calendar(from, from + q.days * 86_400_000));
    },
  );

  r.get('/schedules/:id', { summary: 'One schedule (by id or name)', role: 'viewer', responses: { 200: ScheduleView } }, async (req, res) => {
    res.json(scheduleView(await svc.get(String(req.params['id']))));
  });

  r.patch(
    '/schedules/:id',
    {
      summary: 'Change a schedule',
      description: 'Its creator or an admin. Audited.',
      role: 'operator',
      body: Patch,
      responses: { 200: ScheduleView },
    },
    async (req, res) => {
      const b = limits(Patch.parse(req.body));
      res.json(await svc.update(String(req.params['id']), b, principal(req), actorOf(req)));
    },
  );

  r.delete(
    '/schedules/:id',
    { summary: 'Delete a schedule', description: 'Its creator or an admin. Audited.', role: 'operator', responses: { 204: null } },
    async (req, res) => {
      await svc.remove(String(req.params['id']), principal(req), actorOf(req));
      res.status(204).end();
    },
  );

  r.get(
    '/schedules/:id/history',
    {
      summary: 'Fires of a schedule',
      description: 'Each fire with its task, and the success rate over the finished tasks.',
      role: 'viewer',
      query: HistoryPage,
      responses: { 200: ScheduleHistory },
    },
    async (req, res) => {
      const { limit, offset } = parseQuery(req, HistoryPage);
      res.json(await svc.history(String(req.params['id']), limit, offset));
    },
  );

  return r;
}
