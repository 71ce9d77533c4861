import { z } from 'zod';
import { AgentSettings } from './agent-config.js';
import { ConfigApplied } from './agent-messages.js';
import { ExecutionState, Labels, Metrics, UpdateState, WaveRunState } from './common.js';
import { ERROR_CODES } from './errors.js';
import { HostPolicy } from './policy.js';

/*
 * REST resource shapes: what the server answers, defined once. The server types its views with
 * these, the console and the CLI read them, and GET /api/openapi.json is generated from them (the
 * `id` in each `.meta()` names the schema under components/schemas). Times are ISO 8601 (UTC).
 */

const Time = z.iso.datetime();
const TimeOrNull = Time.nullable();
const int = () => z.number().int();
const Count = int().nonnegative();
export const RoleName = z
  .enum(['viewer', 'operator', 'admin'])
  .meta({ id: 'Role', description: 'viewer (read) < operator (+ run, terminals, cancel) < admin (+ users, tokens, enrollment, updates, audit)' });

/** Every error answer: `{ error: { code, message, …details } }`. */
export const ErrorBody = z
  .object({
    error: z
      .looseObject({
        code: z.enum(ERROR_CODES).describe('stable code; the HTTP status follows from it'),
        message: z.string().describe('for people; may change between versions'),
      })
      .describe('some codes carry details (a selector_syntax error its `position` and `expected`, a lost_unconfirmed rerun its `lost` count)'),
  })
  .meta({ id: 'Error' });

/** A page of a list: `{ items, total }` (lists take `limit` and `offset`). */
export const pageOf = <T extends z.ZodType>(item: T, id: string) => z.object({ items: z.array(item), total: Count }).meta({ id });

/* ---------------- users, sessions, tokens, audit ---------------- */

export const UserView = z.object({ id: int(), username: z.string(), role: RoleName }).meta({ id: 'UserView' });
export type UserView = z.infer<typeof UserView>;
export const User = UserView.extend({ disabled: z.boolean(), createdAt: Time }).meta({ id: 'User' });
export type User = z.infer<typeof User>;
export const LoginResult = z.object({ user: UserView }).meta({ id: 'LoginResult' });
export const Me = z.object({ user: UserView, via: z.enum(['session', 'token']) }).meta({ id: 'Me' });

export const ApiToken = z
  .object({
    id: int(),
    name: z.string(),
    prefix: z.string(),
    username: z.string(),
    createdAt: Time,
    lastUsedAt: TimeOrNull,
    scope: RoleName.nullable().describe("rights of the token; null: the owner's role"),
    expiresAt: TimeOrNull,
    expired: z.boolean(),
    revoked: z.boolean(),
  })
  .meta({ id: 'ApiToken' });
export type ApiToken = z.infer<typeof ApiToken>;
export const ApiTokenCreated = z
  .object({
    id: int(),
    name: z.string(),
    token: z.string().describe('the secret, shown once: send it as `Authorization: Bearer`'),
    prefix: z.string(),
    scope: RoleName.nullable(),
    expiresAt: TimeOrNull,
  })
  .meta({ id: 'ApiTokenCreated' });
export type ApiTokenCreated = z.infer<typeof ApiTokenCreated>;

export const AuditEntry = z
  .object({
    id: int(),
    at: Time,
    actor: z.string(),
    role: z.string().nullable(),
    action: z.string(),
    targetType: z.string().nullable(),
    targetId: z.string().nullable(),
    ip: z.string().nullable(),
    ok: z.boolean(),
    details: z.unknown(),
    actorName: z.string().nullable().optional().describe('the actor as people know it (an agent actor `agent:<id>` by its name)'),
    targetName: z.string().nullable().optional().describe("the target's name (username, agent name, file path …); null when unknown"),
  })
  .meta({ id: 'AuditEntry' });
export type AuditEntry = z.infer<typeof AuditEntry>;

/* ---------------- fleet ---------------- */

export const AgentView = z
  .object({
    id: z.string(),
    name: z.string(),
    hostname: z.string(),
    ips: z.array(z.string()),
    externalIp: z.string().nullable(),
    platform: z.string(),
    arch: z.string(),
    os: z.string(),
    version: z.string(),
    cpus: Count,
    memoryBytes: Count,
    labels: Labels,
    groups: z.array(z.string()),
    status: z.enum(['online', 'offline']),
    connectedAt: TimeOrNull,
    lastSeenAt: TimeOrNull,
    metrics: Metrics.nullable().describe('latest heartbeat'),
    revoked: z.boolean(),
    policy: HostPolicy.nullable().describe("the host's policy as last reported by the agent; null when it never reported one (older agent)"),
  })
  .meta({ id: 'Agent' });
export type AgentView = z.infer<typeof AgentView>;

export const AgentConnection = z
  .object({
    id: int(),
    connectedAt: Time,
    disconnectedAt: TimeOrNull,
    durationMs: int().nullable(),
    reason: z.string().nullable(),
    remoteAddress: z.string().nullable(),
    /** The server node that held the socket (MUSTER_NODE_ID). */
    node: z.string().nullable(),
  })
  .meta({ id: 'AgentConnection' });
export const AgentSummary = z
  .object({
    total: Count,
    byStatus: z.record(z.string(), Count),
    byVersion: z.record(z.string(), Count),
    byPlatform: z.record(z.string(), Count),
    recentConnections: z.array(
      z.object({
        id: int(),
        agentId: z.string(),
        name: z.string().nullable().describe("the agent's name (null when it is no longer known)"),
        connectedAt: Time,
        disconnectedAt: TimeOrNull,
        reason: z.string().nullable(),
      }),
    ),
  })
  .meta({ id: 'AgentSummary' });
export type AgentSummary = z.infer<typeof AgentSummary>;
export const Accepted = z.object({ accepted: z.literal(true) }).meta({ id: 'Accepted' });

export const EnrollmentInfo = z
  .object({
    token: z.string().nullable().describe('MUSTER_ENROLL_TOKEN when set'),
    serverUrl: z.string(),
    installCommand: z.string(),
    package: z
      .object({
        version: z.string().nullable().describe('what `latest` in the install command resolves to; null: no package can be installed yet'),
        source: z.enum(['stable', 'rollout', 'none']),
        uploaded: z.number().int().nonnegative().describe('packages uploaded'),
      })
      .describe('the agent package the install command downloads'),
  })
  .meta({ id: 'EnrollmentInfo' });
export type EnrollmentInfo = z.infer<typeof EnrollmentInfo>;
export const EnrollmentTokenView = z
  .object({
    id: z.string(),
    name: z.string(),
    prefix: z.string(),
    labels: Labels,
    maxUses: Count.nullable(),
    uses: Count,
    expiresAt: Time,
    createdBy: z.string(),
    createdAt: Time,
    revokedAt: TimeOrNull,
    lastUsedAt: TimeOrNull,
    internal: z.boolean(),
    state: z.enum(['active', 'revoked', 'expired', 'used']).describe('`active` until it is revoked, expired or used up'),
  })
  .meta({ id: 'EnrollmentToken' });
export type EnrollmentTokenView = z.infer<typeof EnrollmentTokenView>;
export const EnrollmentTokenCreated = EnrollmentTokenView.extend({ token: z.string().describe('shown once'), installCommand: z.string() }).meta({
  id: 'EnrollmentTokenCreated',
});

/* ---------------- tasks and executions ---------------- */

const Counts = z.partialRecord(ExecutionState, Count);

export const ExecutionView = z
  .object({
    id: z.string(),
    taskId: z.string(),
    agentId: z.string(),
    agentName: z.string(),
    status: ExecutionState,
    exitCode: int().nullable(),
    signal: z.string().nullable(),
    startedAt: TimeOrNull,
    finishedAt: TimeOrNull,
    durationMs: int().nullable(),
    truncated: z.boolean(),
    reason: z.string().nullable(),
    outputBytes: Count,
    outputSeq: Count.optional().describe('output chunks counted in `outputBytes` so far: a live chunk whose seq is at least this is not yet in it'),
    containment: z
      .string()
      .nullable()
      .optional()
      .describe('how the agent contained the process tree: `cgroup2:<path>`, `cgroup1:<path>`, `systemd:<unit>` or `pgid`'),
    reconciledAt: TimeOrNull.optional().describe('set when a `lost` execution later took the result its agent reported'),
  })
  .meta({ id: 'Execution' });
export type ExecutionView = z.infer<typeof ExecutionView>;
export const ExecutionListItem = ExecutionView.extend({ createdAt: Time, script: z.string().describe("the start of the task's script") }).meta({
  id: 'ExecutionListItem',
});

export const TaskStatus = z.enum(['running', 'succeeded', 'failed', 'cancelled']);
const TaskFields = {
  id: z.string(),
  name: z.string().describe("given at creation, else the script's first meaningful line (a library run: the script's name)"),
  interpreter: z.string(),
  args: z.array(z.string()),
  targets: z.unknown().describe('`{selector}` or `{agentIds}` as given'),
  createdBy: z.string(),
  createdAt: Time,
  status: TaskStatus,
  counts: Counts.describe('executions per state'),
  total: Count,
  env: z.record(z.string(), z.string()).describe('without the write-only (secret) values'),
  secretEnv: z.array(z.string()),
  cwd: z.string().nullable(),
  timeoutSec: int(),
  concurrency: z.string().nullable(),
  maxFailures: z.string().nullable(),
  offline: z.enum(['skip', 'queue']),
  queueTtlSec: int().nullable(),
  scriptSha256: z.string(),
  finishedAt: TimeOrNull,
  cancelledAt: TimeOrNull,
  cancelledBy: z.string().nullable(),
  rerunOf: z.string().nullable(),
  scriptId: z.string().nullable(),
  scriptVersion: int().nullable(),
  scheduleId: z.string().nullable(),
  signature: z.string().nullable(),
};
export const TaskView = z.object({ ...TaskFields, script: z.string() }).meta({ id: 'Task' });
export type TaskView = z.infer<typeof TaskView>;
export const TaskDetail = TaskView.extend({ executions: z.array(ExecutionView) }).meta({ id: 'TaskDetail' });
export type TaskDetail = z.infer<typeof TaskDetail>;
export const TaskListItem = z
  .object({ ...TaskFields, scriptBytes: Count, scriptPreview: z.string().describe('the start of the script') })
  .meta({ id: 'TaskListItem' });
export type TaskListItem = z.infer<typeof TaskListItem>;

/* ---------------- script library and schedules ---------------- */

/** Parameter names become env names (MUSTER_PARAM_<NAME>), so they are env-safe; unique case-insensitively per script. */
export const SCRIPT_PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** Longest value (and string default) a parameter takes. */
export const SCRIPT_PARAM_VALUE_MAX = 65_536;
/** Most parameters one script version declares. */
export const SCRIPT_PARAMS_MAX = 64;

const ParamBase = {
  name: z
    .string()
    .regex(SCRIPT_PARAM_NAME, 'parameter names are [A-Za-z_][A-Za-z0-9_]*, at most 64 characters')
    .describe('reaches the script as MUSTER_PARAM_<NAME>'),
  label: z.string().max(128).optional().describe('shown instead of the name'),
  help: z.string().max(1024).optional().describe('shown beside the input'),
  required: z.boolean().default(false).describe('a run without a value (and without a default) is refused'),
};
/**
 * One typed parameter of a library script (stored in each version). Strict: a field another type
 * uses (a `choices` on a string) is refused rather than stored and ignored. The server also checks
 * that names are unique and a default passes its own type's checks.
 */
export const ScriptParamDef = z
  .discriminatedUnion('type', [
    z.strictObject({
      ...ParamBase,
      type: z.literal('string'),
      default: z.string().max(SCRIPT_PARAM_VALUE_MAX).optional(),
      maxLength: z.number().int().min(1).max(SCRIPT_PARAM_VALUE_MAX).optional().describe('longest value accepted'),
    }),
    z.strictObject({
      ...ParamBase,
      type: z.literal('number'),
      default: z.number().finite().optional(),
      min: z.number().finite().optional(),
      max: z.number().finite().optional(),
      integer: z.boolean().optional().describe('only whole numbers'),
    }),
    z.strictObject({ ...ParamBase, type: z.literal('boolean'), default: z.boolean().optional() }),
    z.strictObject({
      ...ParamBase,
      type: z.literal('choice'),
      choices: z.array(z.string().min(1).max(256)).min(1).max(100),
      default: z.string().max(256).optional().describe('one of `choices`'),
    }),
    // Write-only: no default (a stored default would be a secret at rest that every run reveals to the script's editors).
    z.strictObject({ ...ParamBase, type: z.literal('secret') }).describe('write-only: no default; the value reaches the script but is never shown or stored'),
  ])
  .meta({ id: 'ScriptParamDef', description: 'one typed parameter: string, number, boolean, choice or secret, each with its own default and checks' });
export type ScriptParamDef = z.infer<typeof ScriptParamDef>;
export type ScriptParamType = ScriptParamDef['type'];
/** What a run passes for one parameter. */
export const ScriptParamValue = z.union([z.string().max(SCRIPT_PARAM_VALUE_MAX), z.number().finite(), z.boolean()]);
export type ScriptParamValue = z.infer<typeof ScriptParamValue>;
const ScriptFields = {
  id: z.string(),
  name: z.string(),
  owner: z.string(),
  description: z.string(),
  interpreter: z.string(),
  tags: z.array(z.string()),
  params: z.array(ScriptParamDef),
  bodyBytes: Count,
  bodySha256: z.string(),
  version: int().positive(),
  latestVersion: int().positive(),
  createdAt: Time,
  updatedAt: Time,
  versionCreatedBy: z.string(),
  versionCreatedAt: Time,
};
export const ScriptView = z.object({ ...ScriptFields, body: z.string() }).meta({ id: 'Script' });
export type ScriptView = z.infer<typeof ScriptView>;
export const ScriptSummary = z.object(ScriptFields).meta({ id: 'ScriptSummary', description: 'a script version without its body' });
export type ScriptSummary = z.infer<typeof ScriptSummary>;
export const ScriptTask = z
  .object({
    id: z.string(),
    scriptVersion: int(),
    scheduleId: z.string().nullable(),
    status: TaskStatus,
    total: Count,
    createdBy: z.string(),
    createdAt: Time,
    finishedAt: TimeOrNull,
  })
  .meta({ id: 'ScriptTask' });

export const ScheduleView = z
  .object({
    id: z.string(),
    name: z.string(),
    scriptId: z.string(),
    version: int().nullable().describe('null: the latest at each fire'),
    params: z.record(z.string(), ScriptParamValue),
    secretParams: z.array(z.string()),
    targets: z.object({ selector: z.string() }),
    timeoutSec: int(),
    concurrency: z.string().nullable(),
    maxFailures: z.string().nullable(),
    offline: z.enum(['skip', 'queue']),
    queueTtlSec: int(),
    cron: z.string().nullable(),
    timeZone: z.string(),
    intervalSec: int().nullable(),
    enabled: z.boolean(),
    overlap: z.enum(['skip', 'allow']),
    missed: z.enum(['skip', 'run_once']),
    nextFireAt: TimeOrNull,
    nextFires: z.array(Time),
    lastDueAt: TimeOrNull,
    createdBy: z.string(),
    createdAt: TimeOrNull,
    updatedAt: TimeOrNull,
  })
  .meta({ id: 'Schedule' });
export type ScheduleView = z.infer<typeof ScheduleView>;
export const FireStatus = z.enum(['claimed', 'started', 'skipped', 'missed', 'failed']);
export type FireStatus = z.infer<typeof FireStatus>;
export const ScheduleFire = z.object({
  dueAt: Time,
  firedAt: Time,
  status: FireStatus,
  taskId: z.string().nullable(),
  taskStatus: z.string().nullable(),
  scriptVersion: int().nullable(),
  reason: z.string().nullable(),
  nodeId: z.string(),
});
export type ScheduleFire = z.infer<typeof ScheduleFire>;
export const ScheduleHistory = z
  .object({
    items: z.array(ScheduleFire),
    total: Count,
    stats: z.object({ fires: z.record(z.string(), Count), tasks: z.record(z.string(), Count), successRate: z.number().nullable() }),
  })
  .meta({ id: 'ScheduleHistory' });
export type ScheduleHistory = z.infer<typeof ScheduleHistory>;
export const ScheduleCalendar = z
  .object({
    from: Time,
    to: Time,
    items: z.array(
      z.object({
        at: Time,
        scheduleId: z.string(),
        name: z.string(),
        scriptId: z.string(),
        version: int().nullable().describe('null: the latest at each fire'),
        selector: z.string(),
      }),
    ),
    truncated: z.boolean().describe('more fires fall in the window than MUSTER_SCHEDULE_CALENDAR_MAX_FIRES'),
  })
  .meta({ id: 'ScheduleCalendar' });
export type ScheduleCalendar = z.infer<typeof ScheduleCalendar>;

/* ---------------- terminals ---------------- */

export const TerminalSessionView = z
  .object({
    id: z.string(),
    agentId: z.string(),
    agentName: z.string().nullable(),
    username: z.string(),
    openedAt: Time,
    closedAt: TimeOrNull,
    closeReason: z.string().nullable(),
    exitCode: int().nullable(),
    cols: int(),
    rows: int(),
    bytesIn: Count.describe('console → shell'),
    bytesOut: Count.describe('shell → console'),
    status: z.enum(['open', 'closed']),
    attached: z.boolean().describe('a controlling console is attached right now (false for a detached live session)'),
    recording: z.boolean(),
    recordingBytes: Count,
    recordingTruncated: z.boolean(),
  })
  .meta({ id: 'TerminalSession' });
export type TerminalSessionView = z.infer<typeof TerminalSessionView>;
/** A file put into a terminal's current directory (POST /api/terminals/:id/upload). */
export const TerminalUploadView = z
  .object({
    sessionId: z.string(),
    path: z.string().describe('where the file is now on the host'),
    size: Count,
    sha256: z.string(),
  })
  .meta({ id: 'TerminalUpload' });
export type TerminalUploadView = z.infer<typeof TerminalUploadView>;

/* ---------------- updates ---------------- */

export const ArtifactView = z
  .object({
    id: z.string(),
    version: z.string(),
    filename: z.string(),
    arch: z.string().nullable(),
    size: Count,
    sha256: z.string(),
    signature: z.string(),
    createdBy: z.string(),
    createdAt: Time,
    stable: z.boolean().describe('marked stable by an admin: `latest` is the newest stable package'),
    stableBy: z.string().nullable(),
    stableAt: TimeOrNull,
  })
  .meta({ id: 'Artifact' });

/** What `latest` resolves to, and why. */
export const LatestArtifactView = z
  .object({
    artifact: ArtifactView.nullable().describe('null: no package can be installed yet'),
    source: z
      .enum(['stable', 'rollout', 'none'])
      .describe('`stable`: the newest package an admin marked stable; `rollout`: none is marked, the newest that completed a rollout; `none`: neither'),
    uploaded: Count.describe('packages uploaded (for this arch, when given)'),
  })
  .meta({ id: 'LatestArtifact' });
export type LatestArtifactView = z.infer<typeof LatestArtifactView>;

/** What a rollout would do (POST /api/rollouts/preview): asked before one starts. */
export const RolloutPreview = z
  .object({
    version: z.string(),
    selector: z.string(),
    matched: Count.describe('agents the selector matches (revoked ones left out)'),
    update: Count.describe('hosts that can update: what the rollout would update'),
    waves: z.array(Count).describe('wave sizes'),
    skipped: z.array(z.object({ reason: z.string(), count: Count })).describe('hosts skipped, by reason'),
    active: z.string().nullable().describe('the rollout already active, if any (creating another answers 409)'),
  })
  .meta({ id: 'RolloutPreview' });
export type RolloutPreview = z.infer<typeof RolloutPreview>;

/** Soak time and approval between waves (rollouts and distributions alike). */
export const WaveGate = {
  soakSeconds: Count.describe('seconds waited after a wave ends before the next starts'),
  approval: z.boolean().describe('each next wave waits for POST …/approve (state awaiting_approval)'),
  nextWaveAt: TimeOrNull.describe('while soaking: when the next wave starts'),
};
export type ArtifactView = z.infer<typeof ArtifactView>;

export const RolloutState = WaveRunState.describe(
  'running → soaking (soakSeconds after a wave) → awaiting_approval (approval: true) → running …; paused past maxFailures or by hand; ' +
    'ends succeeded | failed | cancelled | nothing_to_do (every target skipped)',
);
export type RolloutState = z.infer<typeof RolloutState>;
const UpdateCounts = z.partialRecord(UpdateState, Count);
export const RolloutWaveView = z
  .object({
    index: Count,
    size: Count.describe('targets in this wave (skipped agents are not in any wave)'),
    state: z.enum(['waiting', 'running', 'done']),
    counts: UpdateCounts,
  })
  .meta({ id: 'RolloutWave' });
export type RolloutWaveView = z.infer<typeof RolloutWaveView>;
export const RolloutTargetView = z
  .object({
    agentId: z.string(),
    agentName: z.string(),
    wave: int(),
    state: UpdateState,
    reason: z.string().nullable(),
    fromVersion: z.string().nullable(),
    updatedAt: Time,
  })
  .meta({ id: 'RolloutTarget' });
export type RolloutTargetView = z.infer<typeof RolloutTargetView>;
export const RolloutView = z
  .object({
    id: z.string(),
    artifactId: z.string().nullable(),
    version: z.string(),
    url: z.string().nullable().describe('download URL when the rollout names one instead of an uploaded artifact'),
    size: Count,
    sha256: z.string(),
    selector: z.string(),
    waveSpec: z.array(z.union([z.number(), z.string()])).describe('the waves as requested, e.g. [1, "10%", "100%"]'),
    maxFailures: Count,
    allowDowngrade: z.boolean(),
    state: RolloutState,
    reason: z.string().nullable(),
    currentWave: Count.describe('index of the wave being updated (or last updated)'),
    failures: Count,
    ...WaveGate,
    createdBy: z.string(),
    createdAt: Time,
    updatedAt: Time,
    finishedAt: TimeOrNull,
    counts: UpdateCounts,
    total: Count,
    waves: z.array(RolloutWaveView),
    targets: z.array(RolloutTargetView).optional().describe('in GET /api/rollouts/{id} and when created'),
  })
  .meta({ id: 'Rollout' });
export type RolloutView = z.infer<typeof RolloutView>;

/* ---------------- notifications ---------------- */

export const NotificationRuleView = z
  .object({
    id: z.string(),
    name: z.string(),
    events: z.array(z.string()),
    channel: z.enum(['webhook', 'slack']),
    url: z.string(),
    offlineMinutes: z.number(),
    enabled: z.boolean(),
    createdBy: z.string(),
    hasSecret: z.boolean().describe('the secret itself is write-only'),
    createdAt: Time,
    updatedAt: Time,
  })
  .meta({ id: 'NotificationRule' });
export type NotificationRuleView = z.infer<typeof NotificationRuleView>;
export const NotificationRuleList = pageOf(NotificationRuleView, 'NotificationRuleList')
  .extend({ events: z.array(z.string()).describe('every event a rule can name') })
  .meta({ id: 'NotificationRuleList' });
export type NotificationRuleList = z.infer<typeof NotificationRuleList>;
export const NotificationDeliveryView = z
  .object({
    id: z.string(),
    ruleId: z.string(),
    event: z.string(),
    status: z.enum(['pending', 'delivered', 'failed']),
    attempts: Count,
    lastCode: int().nullable(),
    lastError: z.string().nullable(),
    log: z
      .array(z.object({ at: Time, code: int().nullable(), error: z.string().nullable(), ms: Count }))
      .describe('one entry per attempt: its time, response code or error, duration'),
    nextAttemptAt: TimeOrNull,
    createdAt: Time,
    updatedAt: Time,
    payload: z.unknown(),
  })
  .meta({ id: 'NotificationDelivery' });
export type NotificationDeliveryView = z.infer<typeof NotificationDeliveryView>;
export const DeliveryRef = z.object({ deliveryId: z.string() }).meta({ id: 'DeliveryRef' });

/* ---------------- live agent configuration, metrics history ---------------- */

const SettingsShape = AgentSettings.describe("each optional, within the server's bounds");
export const AgentConfigRuleView = z
  .object({
    id: z.string(),
    agentId: z.string().nullable().describe('a rule for one agent; else `selector` is set'),
    selector: z.string().nullable(),
    priority: int(),
    description: z.string(),
    settings: SettingsShape,
    createdBy: z.string(),
    updatedBy: z.string(),
    createdAt: Time,
    updatedAt: Time,
  })
  .meta({ id: 'AgentConfigRule' });
export type AgentConfigRuleView = z.infer<typeof AgentConfigRuleView>;
const Bound = z.object({ min: z.number(), max: z.number() });
export const AgentConfigOverview = z
  .object({
    rules: z.array(AgentConfigRuleView),
    bounds: z.object({ heartbeatIntervalSec: Bound, terminalIdleTimeoutSec: Bound, execBufferBytes: Bound }),
    precedence: z.string().describe('how matching rules are merged'),
  })
  .meta({ id: 'AgentConfigOverview' });
export type AgentConfigOverview = z.infer<typeof AgentConfigOverview>;
export const AgentConfigStatus = z
  .object({
    agentId: z.string(),
    name: z.string(),
    online: z.boolean(),
    supported: z.boolean().nullable().describe('whether the agent takes live configuration (null: not seen since the server started)'),
    state: z.enum(['applied', 'pending', 'unsupported', 'default']),
    revision: z.string().describe('revision of the desired settings'),
    desired: SettingsShape,
    rules: z.array(z.string()).describe('ids of the rules that match, in merge order'),
    applied: z
      .object({
        revision: z.string(),
        effective: ConfigApplied.shape.effective.describe('the values the agent runs with (after its host policy)'),
        notes: z.record(z.string(), z.string()).describe('settings the host policy limited, with why'),
        at: Time,
      })
      .nullable(),
  })
  .meta({ id: 'AgentConfigStatus' });
export type AgentConfigStatus = z.infer<typeof AgentConfigStatus>;
export const AgentConfigStatusList = pageOf(AgentConfigStatus, 'AgentConfigStatusList');
export const MetricsHistoryView = z
  .object({
    stepSec: z.number(),
    windowSec: z.number(),
    points: z.array(z.object({ t: Time, cpu: z.number(), mem: z.number(), disk: z.number(), load: z.number() })),
    note: z.string().optional(),
  })
  .meta({ id: 'MetricsHistory' });
