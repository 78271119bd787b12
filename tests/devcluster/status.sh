#!/usr/bin/env bash
# Shows which devcluster processes run and whether the API server is ready. Exits 0 only when all run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ok=0
for c in "${COMPONENTS[@]}"; do
  if pid="$(component_pid "$c")"; then
    printf '%-26s running (pid %s)\n' "$c" "$pid"
  else
    printf '%-26s stopped\n' "$c"; ok=1
  fi
done
if [[ -f "$KUBECONFIG_PATH" ]] && ready="$(kubectl_dc get --raw /readyz 2>/dev/null)"; then
  echo "readyz: $ready"
  kubectl_dc get nodes 2>/dev/null || true
else
  echo "readyz: unreachable"; ok=1
fi
echo "kubeconfig: $KUBECONFIG_PATH"
echo "logs: $DEVCLUSTER_DIR/logs"
exit $ok
