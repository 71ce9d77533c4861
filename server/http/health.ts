import { Router } from 'express';
import type { DbReadiness } from '../db/readiness.js';
import type { Metrics } from '../metrics.js';

/**
 * The probes outside /api: `/healthz` (the process answers), `/readyz` (the database answers
 * within MUSTER_READY_TIMEOUT_MS, whatever it does: a partition must not hang the probe) and the
 * Prometheus `/metrics`.
 */
export function healthRoutes(d: { readiness: DbReadiness; metrics: Metrics; onlineAgents(): number }): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => void res.json({ ok: true }));
  r.get('/readyz', async (_req, res) => {
    const ready = await d.readiness.check();
    if (ready.ok) res.json({ ok: true, db: 'up', agentsOnline: d.onlineAgents() });
    else res.status(503).json({ ok: false, db: 'down', error: ready.error });
  });
  r.get('/metrics', async (_req, res) => {
    res.set('Content-Type', d.metrics.registry.contentType);
    res.send(await d.metrics.registry.metrics());
  });
  return r;
}
