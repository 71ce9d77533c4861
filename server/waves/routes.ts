import type { z } from 'zod';
import type { Role } from '../../protocol/index.js';
import type { AuditLog } from '../auth/audit.js';
import type { ApiRouter } from '../http/api-router.js';
import { actorOf } from '../http/context.js';

const ACTIONS = {
  pause: 'Pause',
  resume: 'Resume',
  cancel: 'Cancel',
  approve: 'Approve the next wave of',
} as const;

/** What a wave-run engine offers the action routes. */
export interface WaveActions {
  view(id: string, withTargets: boolean): Promise<unknown>;
  pause(id: string, by: string): unknown;
  resume(id: string): unknown;
  approve(id: string): unknown;
  cancel(id: string, by: string): unknown;
}

/**
 * POST /<plural>/:id/{pause,resume,cancel,approve} for a kind of wave run (rollouts,
 * distributions): 404 for an unknown id, 409 when the run's state does not allow the action,
 * every attempt audited (failed ones with ok: false).
 */
export function waveActionRoutes(
  r: ApiRouter,
  o: {
    plural: string;
    noun: string;
    role: Role;
    engine: WaveActions;
    audit: AuditLog;
    view: z.ZodType;
  },
): void {
  for (const action of Object.keys(ACTIONS) as (keyof typeof ACTIONS)[]) {
    r.post(
      `/${o.plural}/:id/${action}`,
      {
        summary: `${ACTIONS[action]} a ${o.noun}`,
        description:
          action === 'approve'
            ? `Starts the next wave of a ${o.noun} in state awaiting_approval. 409 in any other state. Audited.`
            : `409 when the ${o.noun}'s state does not allow it. Audited.`,
        role: o.role,
        responses: { 200: o.view },
      },
      async (req, res) => {
        const id = String(req.params['id']);
        await o.engine.view(id, false); // 404 for an unknown id
        const by = actorOf(req).username;
        const audit = { actor: actorOf(req), action: `${o.noun}.${action}`, targetType: o.noun, targetId: id };
        try {
          if (action === 'pause') await o.engine.pause(id, by);
          else if (action === 'resume') await o.engine.resume(id);
          else if (action === 'approve') await o.engine.approve(id);
          else await o.engine.cancel(id, by);
        } catch (err) {
          await o.audit.record({ ...audit, ok: false, details: { error: (err as Error).message } });
          throw err;
        }
        await o.audit.record(audit);
        res.json(await o.engine.view(id, false));
      },
    );
  }
}
