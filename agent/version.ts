declare const __MUSTER_VERSION__: string | undefined;
declare const __MUSTER_BROKEN__: boolean | undefined;
/** The agent's version, fixed at build time (esbuild define); "0.0.0-dev" when run unbundled. */
export const AGENT_VERSION: string = typeof __MUSTER_VERSION__ === 'string' ? __MUSTER_VERSION__ : '0.0.0-dev';
/**
 * True only in a package built with MUSTER_AGENT_BROKEN=1 (a build-time define, for rollback
 * tests): such an agent answers --version and then exits 1 at start. No runtime switch sets it.
 */
export const AGENT_BROKEN: boolean = typeof __MUSTER_BROKEN__ === 'boolean' ? __MUSTER_BROKEN__ : false;
