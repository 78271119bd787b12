#!/usr/bin/env bash
# Prints the shell line that points kubectl (and the e2e tests) at the devcluster: eval "$(make dev-cluster-env)".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
echo "export KUBECONFIG=$KUBECONFIG_PATH"
echo "export PATH=$K8S_BIN:\$PATH"
