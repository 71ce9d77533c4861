#!/usr/bin/env bash
# Removes the Muster agent: stops and disables the service (when --root is / and systemd runs),
# stops what is left of scripts in their scopes, removes the unit and /opt/muster-agent. Keeps
# /etc/muster-agent, /var/lib/muster-agent (agent id and secret: a reinstall comes back as the
# same agent) and drop-ins in muster-agent.service.d unless --purge.
#
#   uninstall-agent.sh [--purge] [--root DIR]
set -euo pipefail

root="/" purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1; shift ;;
    --root) root=${2:-}; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0" >&2; exit 2 ;;
    *) echo "uninstall-agent: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -d "$root" ] || { echo "uninstall-agent: no such root $root" >&2; exit 1; }
root=$(cd "$root" && pwd -P)
prefix=$root; [ "$root" = "/" ] && prefix=""

systemd=0
[ -z "$prefix" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemd=1
if [ "$systemd" = 1 ]; then
  systemctl disable --now muster-agent.service >/dev/null 2>&1 || true
  # Scripts run in their own scopes (muster-exec-*.scope in muster-exec.slice), outside the
  # unit: stopping the unit does not reach those of an agent that crashed or hung. SIGKILL them
  # first (a stop alone sends SIGTERM and may wait 90 s), then stop the slices.
  systemctl kill --signal=SIGKILL 'muster-exec-*.scope' >/dev/null 2>&1 || true
  systemctl stop muster-exec.slice muster.slice >/dev/null 2>&1 || true
fi
rm -f "$prefix/etc/systemd/system/muster-agent.service"
if [ "$purge" = 1 ]; then rm -rf "$prefix/etc/systemd/system/muster-agent.service.d"; fi
if [ "$systemd" = 1 ]; then
  systemctl daemon-reload || true
  systemctl reset-failed muster-agent.service >/dev/null 2>&1 || true
fi
rm -rf "$prefix/opt/muster-agent"
if [ "$purge" = 1 ]; then
  rm -rf "$prefix/etc/muster-agent" "$prefix/var/lib/muster-agent"
  echo "uninstall-agent: removed the agent, its config and its state"
else
  echo "uninstall-agent: removed the agent; kept $prefix/etc/muster-agent and $prefix/var/lib/muster-agent (use --purge to remove them)"
fi
