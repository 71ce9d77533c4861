import type { IncomingMessage, Server } from 'node:http';
import { Server as TlsServer } from 'node:tls';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { AuditLog } from '../auth/audit.js';
import type { AuthService, Principal } from '../auth/auth-service.js';
import type { EnrollmentTokens } from '../auth/enrollment.js';
import { safeEqual, sha256 } from '../auth/crypto.js';
import { randomSecret } from '../config/config.js';
import { rejectUpgrade, retryAfter } from '../http/reject.js';
import type { Enrollment, Fleet } from '../fleet/fleet.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { AgentAuth } from './agent-link.js';
import { Admission, type AdmissionTicket } from './admission.js';

export interface UpgradeDeps {
  auth: AuthService;
  audit: AuditLog;
  fleet: Fleet;
  log: Logger;
  metrics: Metrics;
  enrollment: Pick<EnrollmentTokens, 'check' | 'consume' | 'release'>;
  agentMaxPayload: number;
  consoleMaxPayload: number;
  agentConnectRate: number;
  /** Upgrades per second, in all and per remote address, that do not present a valid agent secret (enrollments, floods). */
  anonConnectRate: number;
  anonConnectRatePerAddress: number;
  /** Remote addresses counted at most (MUSTER_ANON_CONNECT_MAX_ADDRESSES). */
  anonConnectMaxAddresses: number;
  /** Agent sockets accepted and not yet welcomed at most (MUSTER_AGENT_CONNECTS_PENDING_MAX): 503 above. */
  agentConnectsPendingMax: number;
  publicUrl: string | undefined;
  /** Client address of an upgrade (X-Forwarded-For only from MUSTER_TRUST_PROXY peers). */
  remoteOf(req: IncomingMessage): string | null;
  /** True while the server is starting or shutting down: new sockets are refused with 503. */
  draining(): boolean;
  /**
   * Cluster: whether another node holds an open enrollment of `agentId` (its welcome not answered
   * yet, or its undo not done). Absent on one node.
   */
  enrollmentOpenElsewhere?(agentId: string): Promise<boolean>;
  /** `remote`: the client address (remoteOf); `ticket`: the admission slot, given back by the link when it welcomes the agent or its socket closes (until the link exists, by the socket's close). */
  onAgent(ws: import('ws').WebSocket, remote: string | null, auth: AgentAuth, ticket: AdmissionTicket): void;
  onConsole(ws: import('ws').WebSocket, req: IncomingMessage, principal: Principal): void;
}

/** The answer to a token retry while the agent's enrollment is still open (on any node). */
const WAIT = 'enrollment of this agent id still in progress; retry shortly';

const ACCEPTED = Symbol('accepted');
type Stamped = Duplex & { [ACCEPTED]?: number };

/** Refuses an upgrade with a real HTTP status before any socket exists. */
function refuse(socket: Duplex, status: number, message: string, headers: Record<string, string> = {}): void {
  rejectUpgrade(socket, { status, message, headers });
}

/** Routes upgrades by path and authenticates them: /ws/agent and /ws/console. */
export function attachUpgrade(server: Server, deps: UpgradeDeps): { agentWss: WebSocketServer; consoleWss: WebSocketServer; admission: Admission } {
  const agentWss = new WebSocketServer({ noServer: true, maxPayload: deps.agentMaxPayload, perMessageDeflate: false });
  const consoleWss = new WebSocketServer({ noServer: true, maxPayload: deps.consoleMaxPayload, perMessageDeflate: false });
  // Every reason to shed an agent upgrade, decided before the socket is accepted (admission.ts).
  const admission = new Admission(
    {
      knownRate: deps.agentConnectRate,
      anonRate: deps.anonConnectRate,
      anonRatePerAddress: deps.anonConnectRatePerAddress,
      anonMaxAddresses: deps.anonConnectMaxAddresses,
      maxPending: deps.agentConnectsPendingMax,
    },
    deps.draining,
  );

  // When each connection was accepted (after TLS, on https), to time where an agent's opening
  // handshake waits on the server (muster_agent_upgrade_seconds).
  server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Duplex) => {
    (socket as Stamped)[ACCEPTED] = performance.now();
  });
  const upgradeSeconds = deps.metrics.agentUpgradeSeconds;
  const since = (socket: Duplex): number => {
    const t = (socket as Stamped)[ACCEPTED];
    return t === undefined ? 0 : (performance.now() - t) / 1000;
  };

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const path = (req.url ?? '').split('?')[0];
    if (path === '/ws/agent') {
      upgradeSeconds.observe({ stage: 'request' }, since(socket));
      // Starting or draining is one of the admission's answers.
      void agentUpgrade(req, socket, head);
    } else if (path === '/ws/console') {
      // Starting, or going down: come back (to the next process), spread over a few seconds.
      if (deps.draining()) return refuse(socket, 503, 'server starting or stopping; retry later', retryAfter(2, 5));
      void consoleUpgrade(req, socket, head);
    } else {
      refuse(socket, 404, 'no such endpoint');
    }
  });

  async function agentUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const reject = (s: Duplex, status: number, message: string, headers?: Record<string, string>): void => {
      refuse(s, status, message, headers);
      upgradeSeconds.observe({ stage: 'answered' }, since(s));
    };
    const remote = deps.remoteOf(req);
    // A known agent's secret is checked first: a hash and a map lookup, no I/O. Known agents with a
    // valid secret and everyone else (enrollments, wrong or missing secrets) are admitted from
    // separate budgets: a flood of bad or absent credentials (cheap to send) must never spend the
    // reconnect budget of the fleet.
    const known = knownAgent(req);
    if (known && 'wait' in known) {
      // Its enrollment on this node is still open (the secret may not have reached it; the undo
      // comes when that socket closes): come back shortly rather than be told the token is bad.
      deps.metrics.upgradesRejected.inc({ channel: 'agent', status: '503' });
      return reject(socket, 503, known.wait, retryAfter(1, 3));
    }
    const verdict = admission.admit(known !== null && !('error' in known), remote);
    if (!verdict.ok) {
      deps.metrics.upgradesRejected.inc({ channel: 'agent', status: String(verdict.status) });
      return reject(socket, verdict.status, verdict.message, verdict.headers);
    }
    const { ticket } = verdict;
    // Given back when the agent is welcomed (the link), or whenever the socket closes before.
    const giveBack = (): void => ticket.done(false);
    socket.once('close', giveBack);
    const askPeers = known && 'askPeers' in known ? known.askPeers : undefined;
    if (askPeers !== undefined && deps.enrollmentOpenElsewhere) {
      // Only the node that holds an enrollment knows it is open: every node answers a retry the
      // same way (asked after admission, from the budget of upgrades without a valid secret).
      let open = false;
      try {
        open = await deps.enrollmentOpenElsewhere(askPeers);
      } catch (err) {
        deps.log.warn({ err }, 'could not ask the other nodes about an open enrollment');
      }
      if (open) {
        ticket.done(false);
        deps.metrics.upgradesRejected.inc({ channel: 'agent', status: '503' });
        return reject(socket, 503, WAIT, retryAfter(1, 3));
      }
    }
    let auth: AgentAuth | { error: string };
    try {
      auth = known ?? (await checkEnrollment(req));
    } catch (err) {
      deps.log.error({ err }, 'enrollment check failed');
      ticket.done(false);
      return reject(socket, 503, 'enrollment unavailable; retry later', retryAfter(1, 10));
    }
    if ('error' in auth) {
      ticket.done(false);
      deps.metrics.upgradesRejected.inc({ channel: 'agent', status: '401' });
      deps.log.warn({ remote, agentId: String(req.headers['x-muster-agent-id'] ?? '').slice(0, 64), why: auth.error }, 'agent upgrade refused');
      return reject(socket, 401, auth.error);
    }
    const a = auth;
    // The client address is worked out once (the peer address is a system call each time it is read).
    agentWss.handleUpgrade(req, socket, head, (ws) => {
      // From here the link gives the slot back (welcome or close): the socket holds no listener
      // (nor, through its closure, this upgrade's credentials) for the connection's life.
      socket.removeListener('close', giveBack);
      upgradeSeconds.observe({ stage: 'answered' }, since(socket));
      deps.onAgent(ws, remote, a, ticket);
    });
  }

  /**
   * A known agent's credentials: its auth, an error (wrong or missing secret, revoked), `wait` for a
   * retry with the enrollment token while that agent's enrollment is still open here, or null for
   * an unknown id.
   */
  function knownAgent(req: IncomingMessage): AgentAuth | { error: string; askPeers?: string } | { wait: string } | null {
    const agentId = req.headers['x-muster-agent-id'];
    if (typeof agentId !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(agentId)) return { error: 'missing or malformed X-Muster-Agent-Id' };
    const rec = deps.fleet.get(agentId);
    if (!rec) return null;
    const authz = req.headers.authorization;
    if (rec.revokedAt != null) return { error: 'agent revoked' };
    if (!authz?.startsWith('Bearer ')) {
      if (req.headers['x-muster-enroll-token']) {
        if (deps.fleet.enrollmentInProgress(agentId)) return { wait: WAIT };
        // Another node may hold it open (cluster): asked once the upgrade is admitted.
        return { error: 'agent secret required', askPeers: agentId };
      }
      return { error: 'agent secret required' };
    }
    if (!safeEqual(sha256(authz.slice(7).trim()), rec.secretHash)) return { error: 'wrong agent secret' };
    const token = req.headers['x-muster-enroll-token'];
    // A secret no server has accepted yet, and the token beside it: if that secret's enrollment is
    // undone before this socket claims the agent, the token enrolls it again with the same secret.
    if (typeof token === 'string') return { agentId, secretHash: rec.secretHash, reenroll: () => grantOf(token) };
    return { agentId, secretHash: rec.secretHash };
  }

  /** What an enrollment token grants (its labels, and one use consumed with the claim), or null when it is not valid. */
  async function grantOf(token: unknown): Promise<(Enrollment & { tokenId: string | null }) | null> {
    const grant = typeof token === 'string' && token.length <= 256 ? await deps.enrollment.check(token) : null;
    if (!grant) return null;
    return {
      tokenId: grant.tokenId,
      labels: grant.labels,
      ...(grant.tokenId ? { consume: deps.enrollment.consume(grant.tokenId), release: deps.enrollment.release(grant.tokenId) } : {}),
    };
  }

  /** A new agent presenting an enrollment token. */
  async function checkEnrollment(req: IncomingMessage): Promise<AgentAuth | { error: string }> {
    const agentId = String(req.headers['x-muster-agent-id']);
    const enrollment = await grantOf(req.headers['x-muster-enroll-token']);
    if (!enrollment) return { error: 'unknown agent and no valid enrollment token' };
    const secret = randomSecret(32);
    return { agentId, secretHash: sha256(secret), enrollSecret: secret, enrollment };
  }

  function originAllowed(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    if (!origin) return true; // not a browser (CLI, scripts): the credential is all there is
    if (deps.publicUrl && origin === new URL(deps.publicUrl).origin) return true;
    const host = req.headers.host;
    return Boolean(host) && (origin === `http://${host}` || origin === `https://${host}`);
  }

  async function consoleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if (!originAllowed(req)) {
      deps.metrics.upgradesRejected.inc({ channel: 'console', status: '403' });
      return refuse(socket, 403, 'origin not allowed');
    }
    let p: Principal | null = null;
    try {
      p = await deps.auth.principalFromRequest(req);
    } catch (err) {
      deps.log.error({ err }, 'console auth failed');
      return refuse(socket, 503, 'authentication unavailable');
    }
    if (!p) {
      deps.metrics.upgradesRejected.inc({ channel: 'console', status: '401' });
      return refuse(socket, 401, 'sign in first');
    }
    const principal = p;
    consoleWss.handleUpgrade(req, socket, head, (ws) => deps.onConsole(ws, req, principal));
  }

  return { agentWss, consoleWss, admission };
}
