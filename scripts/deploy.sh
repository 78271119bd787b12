#!/usr/bin/env bash
# Installs (or removes, with --delete) the ProgLog CRD and operator from manifests/ into the cluster
# KUBECONFIG names; without KUBECONFIG, into the running devcluster. On the devcluster, the images are
# built from this checkout and loaded on the node first (`make images`), and the operator runs the
# content-hash tag. On another cluster, build and load the images first (images/Dockerfile; see
# .github/workflows/e2e-kind.yml); OPERATOR_IMAGE overrides the operator image of manifests/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -z "${KUBECONFIG:-}" ]]; then
  if ! bash tests/devcluster/status.sh >/dev/null 2>&1; then
    echo "deploy: KUBECONFIG is unset and the devcluster is not running; run \`make dev-cluster-up\` or set KUBECONFIG" >&2
    exit 1
  fi
  eval "$(bash tests/devcluster/env.sh)"
  devcluster=1
fi
command -v kubectl >/dev/null || { echo "deploy: kubectl not found on PATH (make k8s-bins builds one)" >&2; exit 1; }

if [[ "${1:-}" == "--delete" ]]; then
  # ProgLogUsers and ProgLogs first, while the operator still runs: their finalizers need it
  # (a user's policy lines, each ProgLog's ClusterRole). Deleting the CRDs with the operator
  # gone would hang on them.
  if kubectl get crd proglogusers.proglog.dev >/dev/null 2>&1; then
    kubectl delete proglogusers --all --all-namespaces --wait=true --timeout=120s
  fi
  if kubectl get crd proglogs.proglog.dev >/dev/null 2>&1; then
    kubectl delete proglogs --all --all-namespaces --wait=true --timeout=120s
  fi
  kubectl delete -k manifests/ --ignore-not-found --wait=true
  exit 0
fi

if [[ -n "${devcluster:-}" ]]; then
  echo "deploy: building the images and loading them on the devcluster node (make images)"
  eval "$(bash scripts/images.sh | grep '^OPERATOR_IMAGE=')"
fi
# NB: deploy owns what it installs: --force-conflicts takes over fields another manager set (the e2e
# tests apply the same CRDs as "proglog-e2e"; an older deploy's CRD), as a CRD upgrade needs.
kubectl apply --server-side --force-conflicts \
  -f manifests/crd/proglog.dev_proglogs.yaml -f manifests/crd/proglog.dev_proglogusers.yaml
kubectl wait --for=condition=Established --timeout=60s crd/proglogs.proglog.dev crd/proglogusers.proglog.dev
manifest_image="$(awk '$1 == "image:" {print $2; exit}' manifests/operator.yaml)"
# NB: the whole word only, so the release tag manifests/ names is what gets replaced.
kubectl kustomize manifests/ \
  | sed "s#image: ${manifest_image}\$#image: ${OPERATOR_IMAGE:-$manifest_image}#" \
  | kubectl apply --server-side --force-conflicts -f -
echo "deploy: operator image ${OPERATOR_IMAGE:-$manifest_image}"
kubectl -n proglog-system rollout status deployment/proglog-operator --timeout=120s
echo "deploy: the operator runs; create a ProgLog with: kubectl apply -f manifests/samples/proglog.yaml"
