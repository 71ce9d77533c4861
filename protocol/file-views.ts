/** REST views of file distribution (issue 13), shared by the server, the console and the CLI. */

/** A managed file: where it goes on each host, with which owner and mode. */
export interface ManagedFileView {
  id: string;
  path: string;
  owner: string | null;
  group: string | null;
  /** Octal permission bits, e.g. 0o644 = 420. */
  mode: number;
  postCommand: string | null;
  latestRevision: number;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  /** Hosts that hold some revision of it, and how many of them drifted (or lost it). */
  hostCount: number;
  driftedCount: number;
}

export interface FileRevisionView {
  fileId: string;
  revision: number;
  sha256: string;
  size: number;
  createdBy: string;
  createdAt: string;
}

/** What a host reported for a managed file. */
export interface FileHostView {
  agentId: string;
  agentName: string | null;
  revision: number;
  sha256: string | null;
  state: 'ok' | 'drifted' | 'missing';
  reason: string | null;
  updatedAt: string;
}

export type DistributionState = 'running' | 'paused' | 'succeeded' | 'failed' | 'cancelled';
export type DistributionTargetState = 'pending' | 'sending' | 'applied' | 'unchanged' | 'removed' | 'failed' | 'skipped';

export interface DistributionTargetView {
  agentId: string;
  agentName: string;
  wave: number;
  state: DistributionTargetState;
  reason: string | null;
  /** The task that ran the file's post-apply command on this host (only where the content changed). */
  postTaskId: string | null;
  updatedAt: string;
}

export interface DistributionView {
  id: string;
  fileId: string;
  revision: number;
  kind: 'apply' | 'remove';
  selector: string;
  waveSpec: (number | string)[];
  maxFailures: number;
  state: DistributionState;
  reason: string | null;
  currentWave: number;
  failures: number;
  counts: Partial<Record<DistributionTargetState, number>>;
  total: number;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
  targets?: DistributionTargetView[];
}
