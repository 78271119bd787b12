#!/usr/bin/env bash
# Shows which devcluster processes run and whether the API server, the node and the add-ons are healthy.
# Exits 0 only when all components run and the API server is ready.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ok=0
for c in "${COMPONENTS[@]}"; do
  if pid="$(component_pid "$c")"; then
    printf '%-26s running (pid %s, %s MiB)\n' "$c" "$pid" "$(( $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") / 1024 ))"
  else
    printf '%-26s stopped\n' "$c"; ok=1
  fi
done
if [[ -f "$KUBECONFIG_PATH" ]] && ready="$(kubectl_dc get --raw /readyz 2>/dev/null)"; then
  echo "readyz: $ready"
  kubectl_dc get nodes -o wide 2>/dev/null || true
  kubectl_dc get pods -A -o wide 2>/dev/null || true
else
  echo "readyz: unreachable"; ok=1
fi
echo "kubeconfig: $KUBECONFIG_PATH"
echo "logs: $DEVCLUSTER_DIR/logs (components), $DEVCLUSTER_DIR/pod-logs (containers)"
exit $ok
