#!/usr/bin/env bash
# Builds a self-contained agent package: muster-agent-<version>-linux-<arch>.tar.gz holding its
# own Node runtime (a copy of the node running this script), the bundled agent, node-pty's
# native module, the launcher, the systemd unit and the install scripts. A host needs nothing
# else installed.
#
#   deployment/build-agent.sh [--version V] [--out DIR]      (also: npm run build:agent)
#
# Environment: MUSTER_AGENT_VERSION (same as --version; default package.json's version),
# MUSTER_AGENT_BROKEN=1 builds a deliberately broken agent that exits 1 at start (but still
# answers --version, so it passes the updater's self-test and exercises the launcher's
# rollback). Broken is a build-time define: no runtime switch can make a good build broken.
# MUSTER_NODE_BIN overrides the Node binary that is copied in.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(cd "$here/.." && pwd -P)
version=${MUSTER_AGENT_VERSION:-}
out="$root/dist/packages"

while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --version=*) version=${1#*=}; shift ;;
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-agent: unknown argument $1" >&2; exit 2 ;;
  esac
done

node_bin=${MUSTER_NODE_BIN:-$(command -v node)}
node_bin=$(readlink -f "$node_bin")
[ -x "$node_bin" ] || { echo "build-agent: no node binary found" >&2; exit 1; }
if [ -z "$version" ]; then
  version=$("$node_bin" -p "require('$root/package.json').version")
fi
if ! [[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$ ]]; then
  echo "build-agent: invalid version '$version'" >&2; exit 2
fi
case "$("$node_bin" -p process.arch)" in
  x64) arch=x64 ;; arm64) arch=arm64 ;; *) arch=$("$node_bin" -p process.arch) ;;
esac
broken=false
[ "${MUSTER_AGENT_BROKEN:-0}" = "1" ] && broken=true

pty="$root/node_modules/node-pty"
[ -f "$pty/build/Release/pty.node" ] || { echo "build-agent: $pty/build/Release/pty.node missing (npm install builds it)" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd -P)
stage=$(mktemp -d "${TMPDIR:-/tmp}/muster-agent-build.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/node_modules/node-pty/build/Release" "$stage/libexec" "$stage/node/bin" "$stage/share"

# The agent bundle: everything but node-pty (native, shipped beside it).
MUSTER_ROOT="$root" MUSTER_OUT="$stage/lib/agent.js" MUSTER_VERSION="$version" MUSTER_BROKEN="$broken" \
"$node_bin" --input-type=module -e '
import * as esbuild from "esbuild";
const e = process.env;
await esbuild.build({
  entryPoints: [e.MUSTER_ROOT + "/agent/main.ts"], outfile: e.MUSTER_OUT,
  bundle: true, platform: "node", target: "node20", format: "esm", logLevel: "warning",
  banner: { js: "import { createRequire as __cr } from \"node:module\"; const require = __cr(import.meta.url);" },
  external: ["node-pty", "bufferutil", "utf-8-validate"],
  define: { __MUSTER_VERSION__: JSON.stringify(e.MUSTER_VERSION), __MUSTER_BROKEN__: e.MUSTER_BROKEN },
});
' 
echo '{"type":"module"}' > "$stage/lib/package.json"

cp "$pty/package.json" "$stage/lib/node_modules/node-pty/"
cp -R "$pty/lib" "$stage/lib/node_modules/node-pty/"
cp "$pty/build/Release/pty.node" "$stage/lib/node_modules/node-pty/build/Release/"
[ -f "$pty/LICENSE" ] && cp "$pty/LICENSE" "$stage/lib/node_modules/node-pty/"
cp "$node_bin" "$stage/node/bin/node"

cat > "$stage/bin/muster-agent" <<'WRAP'
#!/bin/sh
# Runs this release's agent with this release's Node runtime. Resolves its own directory
# physically, so started through the `current` symlink it still runs one fixed release.
self=$0
case "$self" in */*) ;; *) self=$(command -v -- "$self") ;; esac
dir=$(cd "$(dirname -- "$self")/.." && pwd -P)
exec "$dir/node/bin/node" "$dir/lib/agent.js" "$@"
WRAP
chmod 0755 "$stage/bin/muster-agent"
cp "$here/launcher.sh" "$stage/libexec/muster-agent-launcher"
chmod 0755 "$stage/libexec/muster-agent-launcher"
cp "$here/muster-agent.service" "$here/install-agent.sh" "$here/uninstall-agent.sh" "$stage/share/"
printf '%s\n' "$version" > "$stage/VERSION"

# Self-test before shipping: the packaged runtime runs the packaged bundle.
got=$("$stage/bin/muster-agent" --version)
[ "$got" = "$version" ] || { echo "build-agent: self-test printed '$got', wanted '$version'" >&2; exit 1; }

name="muster-agent-$version-linux-$arch.tar.gz"
tmp="$out/.$name.tmp.$$"
# Sorted, owner-less entries: the same inputs give the same archive listing.
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$stage" -cf - . | gzip -n -"${MUSTER_PACKAGE_GZIP_LEVEL:-6}" > "$tmp"
mv -f "$tmp" "$out/$name"
echo "$out/$name"
