import fs from 'node:fs';
import { waitFor, type Api } from './harness.js';

/** POST /api/tasks; throws unless 201. */
export async function createTask(api: Api, body: Record<string, unknown>): Promise<any> {
  const r = await api.post('/api/tasks', body);
  if (r.status !== 201) throw new Error(`task create failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Waits until the task is no longer running; returns GET /api/tasks/:id. */
export async function waitTask(api: Api, id: string, timeoutMs = 30_000): Promise<any> {
  return waitFor(
    async () => {
      const r = await api.get(`/api/tasks/${id}`);
      return r.status === 200 && r.body.status !== 'running' ? r.body : null;
    },
    `task ${id} to finish`,
    timeoutMs,
  );
}

/** Waits until some execution of the task matches `pred`. */
export async function waitExecution(api: Api, taskId: string, pred: (e: any) => boolean, what: string, timeoutMs = 30_000): Promise<any> {
  return waitFor(
    async () => {
      const r = await api.get(`/api/tasks/${taskId}`);
      return r.status === 200 ? (r.body.executions as any[]).find(pred) : null;
    },
    what,
    timeoutMs,
  );
}

/** Stored output of an execution: text (default), or raw bytes. */
export async function outputText(api: Api, execId: string, stream?: 'stdout' | 'stderr'): Promise<string> {
  const h: Record<string, string> = {};
  if (api.cookie) h['cookie'] = api.cookie;
  const res = await fetch(`${api.base}/api/executions/${execId}/output${stream ? `?stream=${stream}` : ''}`, { headers: h });
  if (res.status !== 200) throw new Error(`output: ${res.status}`);
  return res.text();
}

export async function outputRaw(api: Api, execId: string, stream?: 'stdout' | 'stderr'): Promise<Buffer> {
  const h: Record<string, string> = {};
  if (api.cookie) h['cookie'] = api.cookie;
  const res = await fetch(`${api.base}/api/executions/${execId}/output?raw=1${stream ? `&stream=${stream}` : ''}`, { headers: h });
  return Buffer.from(await res.arrayBuffer());
}

/** Whether a process exists (and is not a zombie). */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/** Pids written one per line by a script. */
export function pidsIn(file: string): number[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => n > 0);
}
