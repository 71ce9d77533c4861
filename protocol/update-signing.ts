/**
 * What an agent package's ed25519 signature covers: this string, built from the package's
 * sha256 (hex). Signing the digest instead of the bytes lets the agent verify while streaming
 * a large download; the version is bound too, because the package carries its own VERSION and
 * the updater checks it (and `--version`) against the version the server announced.
 */
export function packageSigningMessage(sha256Hex: string): string {
  return `muster-agent-package:v1:${sha256Hex.toLowerCase()}`;
}

/**
 * Orders two versions (`1.2.10` > `1.2.9`; a pre-release `1.3.0-rc.1` < `1.3.0`; numeric parts
 * numerically, others as text). Returns <0, 0 or >0.
 */
export function compareVersions(a: string, b: string): number {
  const split = (v: string) => {
    const plus = v.indexOf('+');
    const core = plus >= 0 ? v.slice(0, plus) : v;
    const dash = core.indexOf('-');
    return { main: (dash >= 0 ? core.slice(0, dash) : core).split('.'), pre: dash >= 0 ? core.slice(dash + 1).split('.') : [] };
  };
  const cmpPart = (x: string | undefined, y: string | undefined): number => {
    if (x === y) return 0;
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x),
      ny = /^\d+$/.test(y);
    if (nx && ny) return Number(x) - Number(y);
    if (nx) return -1;
    if (ny) return 1;
    return x < y ? -1 : 1;
  };
  const A = split(a),
    B = split(b);
  for (let i = 0; i < Math.max(A.main.length, B.main.length); i++) {
    const c = cmpPart(A.main[i] ?? '0', B.main[i] ?? '0');
    if (c !== 0) return c;
  }
  if (A.pre.length === 0 || B.pre.length === 0) return B.pre.length - A.pre.length;
  for (let i = 0; i < Math.max(A.pre.length, B.pre.length); i++) {
    const c = cmpPart(A.pre[i], B.pre[i]);
    if (c !== 0) return c;
  }
  return 0;
}
