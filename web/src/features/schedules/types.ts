/** Schedules as GET /api/schedules answers them. */
export interface ScheduleView {
  id: string;
  name: string;
  scriptId: string;
  version: number | null;
  params: Record<string, string | number | boolean>;
  secretParams: string[];
  targets: { selector: string };
  timeoutSec: number;
  cron: string | null;
  timeZone: string;
  intervalSec: number | null;
  enabled: boolean;
  overlap: 'skip' | 'allow';
  missed: 'skip' | 'run_once';
  offline: 'skip' | 'queue';
  nextFireAt: string | null;
  nextFires: string[];
  lastDueAt: string | null;
  createdBy: string;
}

export interface FireView {
  dueAt: string;
  firedAt: string;
  status: 'claimed' | 'started' | 'skipped' | 'missed' | 'failed';
  taskId: string | null;
  taskStatus: string | null;
  scriptVersion: number | null;
  reason: string | null;
}

export interface History {
  items: FireView[];
  total: number;
  stats: { fires: Record<string, number>; tasks: Record<string, number>; successRate: number | null };
}
