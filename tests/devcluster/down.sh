#!/usr/bin/env bash
# Stops the devcluster: every component in reverse start order (SIGTERM, then SIGKILL after a grace
# period), then any pod process the agent left behind. State (etcd data, PVC directories) is kept;
# `down.sh --purge` removes it too.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pid() { # name pid grace_seconds
  local name="$1" pid="$2" grace="$3" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

for ((n = ${#COMPONENTS[@]} - 1; n >= 0; n--)); do
  c="${COMPONENTS[n]}"
  if pid="$(component_pid "$c")"; then
    # The agent stops its pods first (their own grace periods), so it gets longer.
    if [[ "$c" == devcluster-agent ]]; then stop_pid "$c" "$pid" 40; else stop_pid "$c" "$pid" 15; fi
  fi
  rm -f "$(pid_file "$c")"
done

# Pod processes run in their own process groups; the agent records each one's pid.
shopt -s nullglob
for f in "$DEVCLUSTER_DIR"/agent/pods/*/*.pid; do
  pid="$(cat "$f")"
  # NB: only a process that is still one of ours (a stale file may name a reused pid).
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
     && tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "KUBERNETES_SERVICE_PORT=$APISERVER_PORT"; then
    log "killing leftover pod process group $pid ($f)"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
done

if [[ "${1:-}" == "--purge" ]]; then
  log "removing $DEVCLUSTER_DIR"
  rm -rf "$DEVCLUSTER_DIR"
fi
log "down"
