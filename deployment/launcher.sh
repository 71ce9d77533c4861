#!/bin/sh
# muster-agent launcher: what systemd starts (ExecStart). It lives outside releases/ (installed
# at <root>/opt/muster-agent/bin/muster-agent-launcher) so that a bad release cannot break it.
#
# Update protocol (written by agent/updater, key=value lines in <state>/update-marker):
#   rollout_id=…  from_version=…  to_version=…  status=pending|rolled_back  [reason=…]
# While status=pending and `current` points at to_version, every start of the new version is
# counted in <state>/update-attempts. Once MUSTER_AGENT_MAX_START_ATTEMPTS (default 3) starts
# have not led the new version to clear the marker (it does so only after the server welcomed
# it), `current` is swapped back to from_version and the marker says status=rolled_back; the
# old agent then reports rolled_back to the server and removes the marker.
#
# Paths derive from where this file is installed (<root>/opt/muster-agent/bin/), so an install
# into a directory (install-agent.sh --root DIR, as the tests do) runs unchanged. Env overrides:
# MUSTER_AGENT_ROOT, MUSTER_AGENT_MAX_START_ATTEMPTS. Extra arguments go to the agent.
set -u

self=$(readlink -f -- "$0")
install=$(cd "$(dirname -- "$self")/.." && pwd -P)
root=${MUSTER_AGENT_ROOT:-$(cd "$install/../.." && pwd -P)}
[ "$root" = "/" ] && root=""
conf="$root/etc/muster-agent/agent.json"
state="$root/var/lib/muster-agent"
marker="$state/update-marker"
attempts_file="$state/update-attempts"
max=${MUSTER_AGENT_MAX_START_ATTEMPTS:-3}

log() { echo "muster-agent-launcher: $*" >&2; }
field() { sed -n "s/^$1=//p" "$marker" 2>/dev/null | head -n 1; }
release_of_current() { basename "$(readlink "$install/current" 2>/dev/null || echo none)"; }

# Atomic swap: a new symlink renamed over the old one (rename(2) replaces it in one step).
swap_current() {
  ln -sfn "releases/$1" "$install/.current.tmp.$$" && mv -Tf "$install/.current.tmp.$$" "$install/current"
}

if [ -f "$marker" ] && [ "$(field status)" = "pending" ]; then
  to=$(field to_version)
  from=$(field from_version)
  if [ -n "$to" ] && [ "$(release_of_current)" = "$to" ]; then
    n=$(cat "$attempts_file" 2>/dev/null || echo 0)
    case "$n" in '' | *[!0-9]*) n=0 ;; esac
    if [ "$n" -ge "$max" ]; then
      if [ -n "$from" ] && [ -x "$install/releases/$from/bin/muster-agent" ]; then
        log "version $to did not come up after $n starts; rolling back to $from"
        swap_current "$from"
        {
          echo "rollout_id=$(field rollout_id)"
          echo "from_version=$from"
          echo "to_version=$to"
          echo "status=rolled_back"
          echo "reason=version $to did not come up after $n starts"
        } > "$marker.tmp.$$" && mv -f "$marker.tmp.$$" "$marker"
        rm -f "$attempts_file"
      else
        log "version $to keeps failing but release '$from' is missing; cannot roll back"
      fi
    else
      echo $((n + 1)) > "$attempts_file.tmp.$$" && mv -f "$attempts_file.tmp.$$" "$attempts_file"
      log "starting new version $to (attempt $((n + 1)) of $max)"
    fi
  fi
fi

exec "$install/current/bin/muster-agent" --config "$conf" --state-dir "$state" --install-root "$install" "$@"
