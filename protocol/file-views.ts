/** REST views of file distribution (issue 13), shared by the server, the console and the CLI. */
import { z } from 'zod';
import { WaveRunState } from './common.js';

const Time = z.iso.datetime();
const Count = z.number().int().nonnegative();

/** A managed file: where it goes on each host, with which owner and mode. */
export const ManagedFileView = z
  .object({
    id: z.string(),
    path: z.string(),
    owner: z.string().nullable(),
    group: z.string().nullable(),
    mode: z.number().int().describe('octal permission bits, e.g. 0o644 = 420'),
    postCommand: z.string().nullable(),
    latestRevision: Count,
    createdBy: z.string(),
    createdAt: Time,
    updatedAt: Time,
    hostCount: Count.describe('hosts that hold some revision of it'),
    driftedCount: Count.describe('how many of them drifted (or lost it)'),
  })
  .meta({ id: 'ManagedFile' });
export type ManagedFileView = z.infer<typeof ManagedFileView>;

export const FileRevisionView = z
  .object({
    fileId: z.string(),
    revision: z.number().int().positive(),
    sha256: z.string(),
    size: Count,
    createdBy: z.string(),
    createdAt: Time,
  })
  .meta({ id: 'FileRevision' });
export type FileRevisionView = z.infer<typeof FileRevisionView>;

/** What a host reported for a managed file. */
export const FileHostView = z
  .object({
    agentId: z.string(),
    agentName: z.string().nullable(),
    revision: Count,
    sha256: z.string().nullable(),
    state: z.enum(['ok', 'drifted', 'missing']),
    reason: z.string().nullable(),
    updatedAt: Time,
  })
  .meta({ id: 'FileHost' });
export type FileHostView = z.infer<typeof FileHostView>;

export const DistributionState = WaveRunState;
export type DistributionState = z.infer<typeof DistributionState>;
export const DistributionTargetState = z.enum(['pending', 'sending', 'applied', 'unchanged', 'removed', 'failed', 'skipped']);
export type DistributionTargetState = z.infer<typeof DistributionTargetState>;

export const DistributionTargetView = z
  .object({
    agentId: z.string(),
    agentName: z.string(),
    wave: z.number().int(),
    state: DistributionTargetState,
    reason: z.string().nullable(),
    postTaskId: z.string().nullable().describe("the task that ran the file's post-apply command on this host (only where the content changed)"),
    updatedAt: Time,
  })
  .meta({ id: 'DistributionTarget' });
export type DistributionTargetView = z.infer<typeof DistributionTargetView>;

export const DistributionView = z
  .object({
    id: z.string(),
    fileId: z.string(),
    revision: z.number().int().nullable(),
    kind: z.enum(['apply', 'remove']),
    selector: z.string(),
    waveSpec: z.array(z.union([z.number(), z.string()])),
    maxFailures: Count,
    state: DistributionState,
    reason: z.string().nullable(),
    currentWave: Count,
    failures: Count,
    soakSeconds: Count,
    approval: z.boolean(),
    nextWaveAt: Time.nullable(),
    counts: z.partialRecord(DistributionTargetState, Count),
    total: Count,
    createdBy: z.string(),
    createdAt: Time,
    updatedAt: Time,
    finishedAt: Time.nullable(),
    targets: z.array(DistributionTargetView).optional(),
  })
  .meta({ id: 'Distribution' });
export type DistributionView = z.infer<typeof DistributionView>;

export const ManagedFileDetail = ManagedFileView.extend({
  revisions: z.array(FileRevisionView),
  hosts: z.array(FileHostView),
  distributions: z.array(DistributionView).describe('the latest 20'),
}).meta({ id: 'ManagedFileDetail' });
/** `GET /api/files`: a page of managed files, and the largest revision the server takes (the console shows it by the upload). */
export const ManagedFileList = z
  .object({
    items: z.array(ManagedFileView),
    total: Count,
    maxBytes: Count.describe('largest revision the server accepts (MUSTER_FILE_MAX_BYTES)'),
  })
  .meta({ id: 'ManagedFileList' });
export const FileDeleted = z
  .object({
    deleted: z.literal(true),
    removeFromHosts: z.boolean(),
    distribution: DistributionView.nullable().describe('the removal from the hosts, when asked'),
  })
  .meta({ id: 'FileDeleted' });
