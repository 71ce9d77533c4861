#!/usr/bin/env bash
# Installs (or re-installs) the Muster agent on this host: one command, idempotent.
#
#   install-agent.sh --server ws(s)://HOST:PORT --token ENROLL_TOKEN (--package FILE | --url URL)
#                    [--label k=v]... [--name NAME] [--public-key FILE | --public-key-b64 KEY]
#                    [--root DIR] [--no-start]
#
# Layout (DESIGN.md), all under --root (default /):
#   opt/muster-agent/releases/<version>/    the unpacked package (own Node runtime, bundle, node-pty)
#   opt/muster-agent/current -> releases/<version>   swapped atomically (symlink + rename)
#   opt/muster-agent/bin/muster-agent-launcher       what systemd starts (rollback logic)
#   etc/muster-agent/agent.json             server URL, enrollment token, labels, update public key (0600)
#   var/lib/muster-agent/                   agent id, secret, journal, update marker (0700; kept)
#   etc/systemd/system/muster-agent.service
# systemd is reloaded, and the service enabled and (re)started, only when --root is / and systemd
# runs, unless --no-start. Running it twice with the same arguments gives the same tree.
# --url downloads with curl (or wget), sending the enrollment token as X-Muster-Enroll-Token.
# --public-key (PEM file) / --public-key-b64 (32 raw bytes, base64): the key agent packages must be
# signed with; without one the agent refuses every self-update.
set -euo pipefail

die() { echo "install-agent: $*" >&2; exit 1; }
usage() { sed -n '2,23p' "$0" >&2; exit 2; }

server="" token="" package="" url="" name="" pubkey="" pubkey_b64="" root="/" start=1
labels=()
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server=${2:-}; shift 2 ;;
    --token) token=${2:-}; shift 2 ;;
    --package) package=${2:-}; shift 2 ;;
    --url) url=${2:-}; shift 2 ;;
    --label) labels+=("${2:-}"); shift 2 ;;
    --name) name=${2:-}; shift 2 ;;
    --public-key) pubkey=${2:-}; shift 2 ;;
    --public-key-b64) pubkey_b64=${2:-}; shift 2 ;;
    --root) root=${2:-}; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) usage ;;
    *) echo "install-agent: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$server" ] || die "--server is required"
[[ "$server" =~ ^wss?:// ]] || die "--server must be a ws:// or wss:// URL"
[ -n "$token" ] || die "--token is required"
[ -n "$package" ] || [ -n "$url" ] || die "one of --package FILE or --url URL is required"
[ -z "$package" ] || [ -z "$url" ] || die "give --package or --url, not both"
for l in "${labels[@]+"${labels[@]}"}"; do [[ "$l" == ?*=* ]] || die "--label wants k=v, got '$l'"; done
[ -z "$pubkey" ] || [ -r "$pubkey" ] || die "cannot read public key file $pubkey"
[ -z "$pubkey" ] || [ -z "$pubkey_b64" ] || die "give --public-key or --public-key-b64, not both"
[ -z "$pubkey_b64" ] || [[ "$pubkey_b64" =~ ^[A-Za-z0-9+/]{43}=$ ]] || die "--public-key-b64 wants the base64 of 32 bytes"

mkdir -p "$root"
root=$(cd "$root" && pwd -P)
prefix=$root; [ "$root" = "/" ] && prefix=""
opt="$prefix/opt/muster-agent"
etc="$prefix/etc/muster-agent"
state="$prefix/var/lib/muster-agent"
unitdir="$prefix/etc/systemd/system"

work=$(mktemp -d "${TMPDIR:-/tmp}/muster-agent-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -n "$url" ]; then
  package="$work/package.tar.gz"
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL -H "X-Muster-Enroll-Token: $token" -o "$package" "$url" || die "download failed: $url"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --header "X-Muster-Enroll-Token: $token" -O "$package" "$url" || die "download failed: $url"
  else
    die "need curl or wget to download $url"
  fi
fi
[ -r "$package" ] || die "cannot read package $package"
version=$(tar -xzOf "$package" ./VERSION 2>/dev/null | head -n 1) || true
[[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$ ]] || die "$package is not a muster-agent package (no valid ./VERSION)"

mkdir -p "$opt/releases" "$opt/bin" "$etc" "$unitdir"
mkdir -p -m 0700 "$state"
chmod 0700 "$state"
chmod 0755 "$opt" "$opt/releases" "$opt/bin"

# The release: unpack beside, self-test, then rename into place. An existing release of the
# same version that passes the self-test is kept as it is (idempotent, and never replaced
# under a running agent).
rel="$opt/releases/$version"
if [ -x "$rel/bin/muster-agent" ] && [ "$("$rel/bin/muster-agent" --version 2>/dev/null)" = "$version" ]; then
  echo "install-agent: release $version already installed"
else
  tmp="$opt/releases/.tmp-$version-$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  tar -xzf "$package" -C "$tmp" --no-same-owner || { rm -rf "$tmp"; die "cannot unpack $package"; }
  got=$("$tmp/bin/muster-agent" --version 2>/dev/null) || got=""
  [ "$got" = "$version" ] || { rm -rf "$tmp"; die "self-test failed: bin/muster-agent --version printed '$got', wanted '$version'"; }
  rm -rf "$rel"
  mv "$tmp" "$rel"
  echo "install-agent: installed release $version"
fi
node="$rel/node/bin/node"

# The launcher, outside releases/ (a bad release must not be able to break rollback).
install -m 0755 "$rel/libexec/muster-agent-launcher" "$opt/bin/.muster-agent-launcher.tmp"
mv -f "$opt/bin/.muster-agent-launcher.tmp" "$opt/bin/muster-agent-launcher"

# current -> releases/<version>, swapped atomically.
ln -sfn "releases/$version" "$opt/.current.tmp.$$"
mv -Tf "$opt/.current.tmp.$$" "$opt/current"

# agent.json, written by the package's own Node (exact JSON escaping), 0600: it holds the token.
labels_joined=$(printf '%s\n' "${labels[@]+"${labels[@]}"}")
MI_SERVER="$server" MI_TOKEN="$token" MI_NAME="$name" MI_LABELS="$labels_joined" MI_PUBKEY_FILE="$pubkey" MI_PUBKEY_B64="$pubkey_b64" \
MI_OUT="$etc/agent.json" "$node" -e '
const fs = require("fs");
const e = process.env;
const cfg = { server: e.MI_SERVER, token: e.MI_TOKEN };
if (e.MI_NAME) cfg.name = e.MI_NAME;
const labels = {};
for (const kv of (e.MI_LABELS || "").split("\n")) { if (!kv) continue; const i = kv.indexOf("="); labels[kv.slice(0, i)] = kv.slice(i + 1); }
cfg.labels = labels;
if (e.MI_PUBKEY_FILE) cfg.updatePublicKey = fs.readFileSync(e.MI_PUBKEY_FILE, "utf8").trim();
if (e.MI_PUBKEY_B64) cfg.updatePublicKey = e.MI_PUBKEY_B64;
const tmp = e.MI_OUT + ".tmp";
fs.writeFileSync(tmp, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
fs.chmodSync(tmp, 0o600);
fs.renameSync(tmp, e.MI_OUT);
'

install -m 0644 "$rel/share/muster-agent.service" "$unitdir/.muster-agent.service.tmp"
mv -f "$unitdir/.muster-agent.service.tmp" "$unitdir/muster-agent.service"

if [ "$start" = 1 ] && [ -z "$prefix" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  systemctl enable muster-agent.service >/dev/null
  systemctl restart muster-agent.service
  echo "install-agent: muster-agent.service enabled and started"
elif [ "$start" = 1 ] && [ -z "$prefix" ]; then
  echo "install-agent: systemd is not running here; start $opt/bin/muster-agent-launcher under your supervisor"
else
  echo "install-agent: not starting (--no-start or --root)"
fi
echo "install-agent: muster-agent $version installed under ${prefix:-/}"
