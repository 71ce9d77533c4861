declare const __MUSTER_VERSION__: string | undefined;
/** The agent's version, fixed at build time (esbuild define); "0.0.0-dev" when run unbundled. */
export const AGENT_VERSION: string = typeof __MUSTER_VERSION__ === 'string' ? __MUSTER_VERSION__ : '0.0.0-dev';
