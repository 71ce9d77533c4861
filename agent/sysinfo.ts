import fs from 'node:fs';
import os from 'node:os';
import type { Metrics } from '../protocol/index.js';

/** Non-internal IPv4/IPv6 addresses of this host. */
export function hostIps(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal) out.push(a.address);
  }
  return out.length ? out : ['127.0.0.1'];
}

/** PRETTY_NAME from /etc/os-release, else the kernel release. */
export function osRelease(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(fs.readFileSync('/etc/os-release', 'utf8'));
    if (m?.[1]) return `${m[1]} (kernel ${os.release()})`;
  } catch {
    /* not Linux or no os-release */
  }
  return `${os.type()} ${os.release()}`;
}

/** CPU usage between calls, from /proc-backed os.cpus() counters. */
export class CpuMeter {
  private last = snapshot();
  sample(): number {
    const now = snapshot();
    const idle = now.idle - this.last.idle;
    const total = now.total - this.last.total;
    this.last = now;
    return total > 0 ? Math.min(100, Math.max(0, Math.round((1 - idle / total) * 1000) / 10)) : 0;
  }
}
function snapshot() {
  let idle = 0,
    total = 0;
  for (const c of os.cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq;
  }
  return { idle, total };
}

/** Available memory from /proc/meminfo (MemAvailable), falling back to os.freemem(). */
function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m?.[1]) return Number(m[1]) * 1024;
  } catch {
    /* fall through */
  }
  return os.freemem();
}

/** One heartbeat's metrics. */
export function collectMetrics(cpu: CpuMeter, running: { executions: number; terminals: number }): Metrics {
  let diskUsed = 0,
    diskTotal = 0;
  try {
    const s = fs.statfsSync('/');
    diskTotal = s.blocks * s.bsize;
    diskUsed = (s.blocks - s.bfree) * s.bsize;
  } catch {
    /* keep zeros */
  }
  const total = os.totalmem();
  const load = os.loadavg();
  return {
    cpuPercent: cpu.sample(),
    memUsedBytes: Math.max(0, total - memAvailable()),
    memTotalBytes: total,
    load: [load[0] ?? 0, load[1] ?? 0, load[2] ?? 0],
    diskUsedBytes: diskUsed,
    diskTotalBytes: diskTotal,
    uptimeSec: Math.round(os.uptime()),
    runningExecutions: running.executions,
    openTerminals: running.terminals,
  };
}
